"""Torch → ExecuTorch `.pte` with the XNNPACK delegate: fp32, fp16-rounded weights, or int8.

fp32: ``torch.export`` → ``to_edge_transform_and_lower(partitioner=[XnnpackPartitioner()])``
→ ``to_executorch()``. int8 reuses the SAME PT2E graph the TFLite path lowers (the quantize
step's `QuantizationPlan.pt2e_model`, annotated by our `LayerQuantizer`): that graph was
converted with ``fold_quantize=False`` (litert-torch wants the weights' quantize ops), so a
copy has its weight quantize ops folded into int8 constants first (torchao's `constant_fold`,
what ``convert_pt2e(fold_quantize=True)`` does); XNNPACK's partitioner then takes the whole
graph (checked on the digits CNN and the zoo's CNNs: one delegate call, no portable kernels).
XNNPACK's own `XNNPACKQuantizer` is not needed: the TFLite path's quantizer lowers.
"""

from __future__ import annotations

import contextlib
import copy
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from toolkit.errors import ExportError
from toolkit.export.plan import QuantizationPlan

DELEGATE = "delegate:XnnpackBackend"


def export_pte(
    model: nn.Module,
    input_shape: Sequence[int],
    path: Path,
    quantization: Optional[QuantizationPlan] = None,
) -> Path:
    """Writes `model` as an ExecuTorch program delegated to XNNPACK, with a static input shape.

    Args:
        model: the torch model (float); ignored in favour of the plan's PT2E graph for int8.
        input_shape: input shape including the batch dimension, e.g. (1, 1, 8, 8).
        path: the file to write (parent folders are created).
        quantization: None for fp32; `fp16` exports the plan's float model (weights rounded
            to fp16 values, computed in fp32: XNNPACK's fp16 path is not used); the int8
            schemes lower the plan's PT2E graph (int8 weights and activations).

    Returns:
        `path`.

    Raises:
        ExportError: torch.export or the ExecuTorch lowering failed (names the file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    source = _source(model, quantization, path)
    sample = (torch.zeros(tuple(input_shape)),)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import (
                XnnpackPartitioner,
            )
            from executorch.exir import to_edge_transform_and_lower

            program = torch.export.export(source, sample)
            edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
            buffer = edge.to_executorch().buffer
    except Exception as exc:  # torch.export and exir raise many kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"{path}: ExecuTorch export failed: {first}") from exc
    path.write_bytes(buffer)
    return path


def _source(model: nn.Module, plan: Optional[QuantizationPlan], path: Path) -> nn.Module:
    if plan is None:
        return _eval(model)
    if plan.scheme == "fp16":
        return _eval(plan.float_model or model)
    if plan.pt2e_model is None:
        raise ExportError(f"{path}: the {plan.scheme} plan carries no PT2E model")
    from torchao.quantization.pt2e.constant_fold import constant_fold
    from torchao.quantization.pt2e.quantize_pt2e import _quant_node_constraint

    graph = copy.deepcopy(plan.pt2e_model)
    constant_fold(graph, _quant_node_constraint)  # weights: int8 constants XNNPACK packs
    return graph


def _eval(model: nn.Module) -> nn.Module:
    try:
        model.eval()
    except (NotImplementedError, RuntimeError):
        pass  # an exported graph keeps the mode it was exported in
    return model


def pte_calls(path: Path) -> dict[str, int]:
    """Call name -> count in a `.pte`: ``delegate:XnnpackBackend`` per delegated partition and
    each operator left to the portable kernels (``aten::convolution.out``…)."""
    from device_agent.runtimes.pte_program import ProgramError, program_calls

    try:
        return program_calls(Path(path).read_bytes())
    except ProgramError as exc:
        raise ExportError(f"{path}: {exc}") from None


def undelegated(calls: dict[str, int]) -> dict[str, int]:
    """The calls XNNPACK did not take (run by ExecuTorch's portable kernels, slower)."""
    return {name: n for name, n in calls.items() if not name.startswith("delegate:")}


def run_pte(path: Path, inputs: np.ndarray) -> np.ndarray:
    """Float outputs of a `.pte` for float `inputs` (batch first), one sample (or the
    program's static batch) at a time, on the host's ExecuTorch runtime."""
    import importlib

    bindings = importlib.import_module("executorch.extension.pybindings._C")
    program = bindings._load_program(
        str(path),
        enable_etdump=False,
        debug_buffer_size=0,
        program_verification=bindings.Verification.InternalConsistency,
        data_path=None,
    )
    method = program.load_method("forward")
    batch = int(method.method_meta().input_tensor_meta(0).sizes()[0]) or 1
    outputs: list[Any] = []
    x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
    for start in range(0, len(x), batch):
        chunk = x[start : start + batch]
        real = len(chunk)
        if real < batch:
            chunk = torch.cat([chunk, torch.zeros((batch - real, *chunk.shape[1:]))])
        method.set_inputs([chunk.contiguous()])
        method.execute()
        outputs.append(method.get_outputs(clone_outputs=True)[0][:real].numpy())
    return np.concatenate(outputs).astype(np.float32)

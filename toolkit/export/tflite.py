"""Torch → `.tflite` through litert-torch: fp32, fp16 weights, or int8 via its PT2E quantizer."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from toolkit.errors import ExportError
from toolkit.export.plan import QuantizationPlan


def export_tflite(
    model: nn.Module,
    input_shape: Sequence[int],
    path: Path,
    quantization: Optional[QuantizationPlan] = None,
) -> Path:
    """Converts `model` to a `.tflite` file with a static input shape.

    Args:
        model: the torch model (float); ignored in favour of the plan's PT2E graph for int8.
        input_shape: input shape including the batch dimension, e.g. (1, 1, 8, 8).
        path: the file to write (parent folders are created).
        quantization: None for fp32; a plan with scheme `fp16` (weights stored as fp16 by
            litert-torch's fp16 recipe, computed in fp32), or `int8-dynamic`, `int8-static`,
            `qat`, `mixed` (the plan's PT2E-converted graph and quantizer; int8 weights, and
            int8 activations and int8 input/output for the static schemes).

    Returns:
        `path`.

    Raises:
        ExportError: litert-torch could not convert the model.
    """
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the converter's C++ INFO lines
    import litert_torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sample = (torch.zeros(tuple(input_shape)),)
    kwargs = {}
    source = model
    if quantization is not None and quantization.scheme == "fp16":
        from litert_torch.generative.quantize import quant_recipes

        source = _delegable(quantization.float_model or model, sample)
        kwargs["quant_config"] = quant_recipes.full_fp16_recipe()
    elif quantization is not None:
        from litert_torch.quantize.quant_config import QuantConfig

        if quantization.pt2e_model is None or quantization.pt2e_quantizer is None:
            raise ExportError(f"{path}: the {quantization.scheme} plan carries no PT2E model")
        source = quantization.pt2e_model  # rewritten before annotation (transform_for_annotation)
        kwargs["quant_config"] = QuantConfig(pt2e_quantizer=quantization.pt2e_quantizer)
    else:
        source = _delegable(model, sample)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # converters print; keep stdout for --json
            litert_torch.convert(source, sample, **kwargs).export(str(path))
    except Exception as exc:  # litert-torch raises many kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"{path}: TFLite conversion failed: {first}") from exc
    return path


def _delegable(model: nn.Module, sample: tuple) -> nn.Module:
    """`model`, or its exported graph with `zero_pad_max_pools` applied when that changes it.

    Only a model holding a padded `nn.MaxPool2d` is exported here (others convert as given).
    """
    if not any(
        isinstance(m, nn.MaxPool2d) and m.padding not in (0, (0, 0)) for m in model.modules()
    ):
        return model
    training = model.training
    try:
        graph = torch.export.export(model.eval(), sample).module()
    except Exception:  # noqa: BLE001 - the converter exports too and reports its own error
        return model
    finally:
        model.train(training)  # the caller's model keeps its mode
    return graph if zero_pad_max_pools(graph) else model


def zero_pad_max_pools(graph: torch.fx.GraphModule) -> int:
    """Moves the padding of a max pool over non-negative values into a zero PAD, in place.

    torch's padded `max_pool2d` lowers to PADV2 with -inf, then MAX_POOL_2D; LiteRT's XNNPACK
    delegate takes no PADV2, so the model splits into two delegate partitions around it (the
    ResNet stem: conv → BN → ReLU → 3×3/2 max pool with padding 1). After a ReLU (or ReLU6,
    or a clamp at a minimum ≥ 0) every window holds a value ≥ 0, so padding with 0 gives the
    same maximum; a PAD with zeros is delegated (fp32 and int8, where 0 is the zero point's
    value of a range starting at 0). The pad is written in NHWC between two permutes, which
    cancel the converter's own NCHW/NHWC transposes: an NCHW pad stays NCHW in an int8 graph,
    between two TRANSPOSEs.

    Returns:
        How many max pools were rewritten.
    """
    aten = torch.ops.aten
    rewritten = 0
    for node in list(graph.graph.nodes):
        if node.op != "call_function" or node.target != aten.max_pool2d.default:
            continue
        args = list(node.args) + [None] * (6 - len(node.args))
        source, padding = args[0], args[3] or [0, 0]
        padding = list(padding) * (2 if len(padding) == 1 else 1)
        dilation = args[4] or [1, 1]
        if (
            not any(padding)
            or args[5]
            or any(d != 1 for d in dilation)
            or not _non_negative(source)
        ):
            continue
        with graph.graph.inserting_before(node):  # padded in NHWC: see the docstring
            nhwc = graph.graph.call_function(aten.permute.default, (source, [0, 2, 3, 1]))
            pad = graph.graph.call_function(
                aten.constant_pad_nd.default,
                (nhwc, [0, 0, padding[1], padding[1], padding[0], padding[0]], 0.0),
            )
            nchw = graph.graph.call_function(aten.permute.default, (pad, [0, 3, 1, 2]))
        for added in (nhwc, pad, nchw):
            _carry_meta(node, added)
        node.args = (nchw, args[1], args[2], [0, 0], *node.args[4:])
        rewritten += 1
    if rewritten:
        graph.graph.lint()
        graph.recompile()
    return rewritten


def _carry_meta(source: torch.fx.Node, node: torch.fx.Node) -> None:
    """The module stack of `source` (layer filters read it) and `node`'s own fake value."""
    for key in ("nn_module_stack", "source_fn_stack", "stack_trace"):
        if key in source.meta:
            node.meta[key] = source.meta[key]
    value = node.args[0].meta.get("val")
    if value is not None and hasattr(value, "fake_mode"):
        with value.fake_mode:
            node.meta["val"] = node.target(value, *node.args[1:])


def _non_negative(node: object) -> bool:
    """Whether `node` is a ReLU, or a clamp whose lower bound is ≥ 0."""
    aten = torch.ops.aten
    if not isinstance(node, torch.fx.Node) or node.op != "call_function":
        return False
    if node.target in (aten.relu.default, aten.relu_.default):
        return True
    if node.target in (aten.hardtanh.default, aten.hardtanh_.default, aten.clamp.default):
        low = (
            node.args[1]
            if len(node.args) > 1
            else node.kwargs.get(
                "min_val",
                node.kwargs.get("min", -1.0 if node.target != aten.clamp.default else None),
            )
        )
        return isinstance(low, (int, float)) and low >= 0
    return False

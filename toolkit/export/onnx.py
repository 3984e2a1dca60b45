"""Torch → `.onnx` with `torch.onnx.export(dynamo=True)`; fp16/int8 via onnxruntime tools."""

from __future__ import annotations

import contextlib
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from toolkit.errors import ExportError
from toolkit.export.plan import QuantizationPlan

INPUT_NAME = "input"
OUTPUT_NAME = "output"


def export_onnx(
    model: nn.Module,
    input_shape: Sequence[int],
    path: Path,
    quantization: Optional[QuantizationPlan] = None,
    calibration: Optional[torch.Tensor] = None,
) -> Path:
    """Exports `model` to a self-contained `.onnx` file (batch dimension dynamic when possible).

    Args:
        model: the float torch model (the plan's `float_model` wins when a plan is given).
        input_shape: input shape including the batch dimension, e.g. (1, 1, 8, 8).
        path: the file to write (parent folders are created).
        quantization: None for fp32; scheme `fp16` converts weights and compute to fp16
            (inputs/outputs stay fp32); `int8-dynamic` uses `quantize_dynamic` (int8 weights);
            `int8-static`, `qat` and `mixed` use `quantize_static` in QDQ format with ranges
            from the plan's observer over `calibration` (layers the plan keeps in float are
            excluded).
        calibration: calibration inputs; defaults to the plan's.

    Returns:
        `path`.

    Raises:
        ExportError: export or quantization failed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    source = model
    if quantization is not None and quantization.float_model is not None:
        source = quantization.float_model
    if quantization is None:
        _export_float(source, input_shape, path)
        return path
    with tempfile.TemporaryDirectory(prefix="edgeloop-onnx-") as tmp:
        float_path = Path(tmp) / "float.onnx"
        _export_float(source, input_shape, float_path)
        from toolkit.export import onnx_quant

        try:
            if quantization.scheme == "fp16":
                onnx_quant.to_fp16(float_path, path)
            elif quantization.scheme == "int8-dynamic":
                onnx_quant.quantize_dynamic_int8(float_path, path, quantization)
            else:
                samples = calibration if calibration is not None else quantization.calibration
                if samples is None:
                    raise ExportError(f"{path}: {quantization.scheme} needs calibration inputs")
                onnx_quant.quantize_static_int8(float_path, path, quantization, samples)
        except ExportError:
            raise
        except Exception as exc:  # onnxruntime.quantization raises many kinds
            raise ExportError(f"{path}: ONNX {quantization.scheme} quantization failed: "
                              f"{_first_line(exc)}") from exc
    return path


def _export_float(model: nn.Module, input_shape: Sequence[int], path: Path) -> None:
    sample = (torch.zeros(tuple(input_shape)),)
    batch = torch.export.Dim("batch", min=1, max=4096)
    attempts = [({0: batch},), None]  # dynamic batch first, static if the model forbids it
    last: Optional[Exception] = None
    for dynamic in attempts:
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
                warnings.simplefilter("ignore")
                program = torch.onnx.export(
                    model,
                    sample,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamo=True,
                    dynamic_shapes=dynamic,
                    external_data=False,
                    verbose=False,
                )
                program.save(str(path), external_data=False)
            return
        except Exception as exc:  # torch.onnx raises many kinds
            last = exc
    raise ExportError(f"{path}: ONNX export failed: {_first_line(last)}") from last


def _first_line(exc: Optional[BaseException]) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

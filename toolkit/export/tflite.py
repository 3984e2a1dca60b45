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

        source = quantization.float_model or model
        kwargs["quant_config"] = quant_recipes.full_fp16_recipe()
    elif quantization is not None:
        from litert_torch.quantize.quant_config import QuantConfig

        if quantization.pt2e_model is None or quantization.pt2e_quantizer is None:
            raise ExportError(f"{path}: the {quantization.scheme} plan carries no PT2E model")
        source = quantization.pt2e_model
        kwargs["quant_config"] = QuantConfig(pt2e_quantizer=quantization.pt2e_quantizer)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # converters print; keep stdout for --json
            litert_torch.convert(source, sample, **kwargs).export(str(path))
    except Exception as exc:  # litert-torch raises many kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"{path}: TFLite conversion failed: {first}") from exc
    return path

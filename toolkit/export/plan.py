"""What a quantize step decided, handed to the exporters: `QuantizationPlan`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

SCHEMES = ("fp16", "int8-dynamic", "int8-static", "qat", "mixed")
OBSERVERS = ("minmax", "percentile", "mean-std", "mse")
GRANULARITIES = ("per-tensor", "per-channel")
PRECISIONS = ("int8", "fp16", "fp32")
FULL_INTEGER = ("int8-static", "qat", "mixed")  # int8 activations too: float ops are islands


class NotPortableError(ValueError):
    """A quantized graph holds ops that plain torch cannot express (no portable model.pt2)."""


@dataclass
class QuantizationPlan:
    """A quantization decided on the torch model, to be reproduced by each exporter.

    Attributes:
        scheme: one of `SCHEMES`.
        granularity: weight scales `per-tensor` or `per-channel` (output channel).
        observer: activation range statistic: `minmax`, `percentile`, `mean-std` or `mse`.
        percentile: the percentile (0-100) kept by the `percentile` observer. Default 99.99.
        k: the σ multiple of the `mean-std` observer (range mean ± k·σ). Default 4.
        layer_precision: module name -> `int8` | `fp16` | `fp32` (the `mixed` scheme; other
            schemes leave it empty).
        calibration: calibration inputs (batch, *input shape) for static schemes.
        float_model: the float torch model before quantization (exported to ONNX then
            quantized by onnxruntime; the fp16 TFLite path converts it too).
        pt2e_model: the PT2E-converted torch graph (quantize/dequantize ops inserted), the
            model litert-torch lowers to an int8 TFLite; None for `fp16`.
        pt2e_quantizer: the litert-torch `PT2EQuantizer` that annotated `pt2e_model`.
    """

    scheme: str
    granularity: str = "per-tensor"
    observer: str = "minmax"
    percentile: float = 99.99
    k: float = 4.0
    layer_precision: dict[str, str] = field(default_factory=dict)
    calibration: Optional[torch.Tensor] = None
    float_model: Any = None
    pt2e_model: Any = None
    pt2e_quantizer: Any = None

    @property
    def dtype(self) -> str:
        """The artifact's dominant dtype for parity tolerances: `fp16` or `int8`."""
        return "fp16" if self.scheme == "fp16" else "int8"

    def summary(self) -> dict[str, Any]:
        """Plain facts for the model card."""
        facts: dict[str, Any] = {"scheme": self.scheme}
        if self.scheme != "fp16":
            facts["granularity"] = self.granularity
        if self.scheme in ("int8-static", "qat", "mixed"):
            facts["observer"] = self.observer
            if self.observer == "percentile":
                facts["percentile"] = self.percentile
            if self.observer == "mean-std":
                facts["k"] = self.k
            facts["calibration_samples"] = 0 if self.calibration is None else len(self.calibration)
        if self.layer_precision:
            facts["layer_precision"] = dict(self.layer_precision)
        return facts


def activation_range(values: np.ndarray, observer: str, percentile: float, k: float) -> tuple:
    """Returns (low, high) of the values a quantized tensor must cover.

    Args:
        values: every observed value of one tensor (any shape; flattened).
        observer: `minmax` (exact extremes), `percentile` (the `percentile`-th and
            `100 - percentile`-th percentiles), `mean-std` (mean ± k·σ, within the extremes) or
            `mse` (`mse_range`).
        percentile: in percent, e.g. 99.99.
        k: σ multiple for `mean-std`.

    Returns:
        (low, high) as floats, with low ≤ 0 ≤ high so that zero stays representable.
    """
    flat = np.asarray(values, dtype=np.float64).ravel()
    if flat.size == 0:
        return 0.0, 0.0
    lo, hi = float(flat.min()), float(flat.max())
    if observer == "percentile":
        lo, hi = (float(v) for v in np.percentile(flat, [100.0 - percentile, percentile]))
    elif observer == "mean-std":
        mean, std = float(flat.mean()), float(flat.std())
        lo, hi = max(lo, mean - k * std), min(hi, mean + k * std)
    elif observer == "mse":
        return mse_range(flat)
    return min(lo, 0.0), max(hi, 0.0)


_MSE_SAMPLE = 1 << 18  # values the `mse` search scores each candidate range on
_MSE_STEPS = 64  # candidate ranges, from the full range down to 1/8 of it


def mse_range(flat: np.ndarray) -> tuple:
    """The (low, high) among the full range scaled by 1 … 1/8 whose affine int8 rounding has
    the least mean squared error on the values (a sample of them): outliers are clipped only
    when clipping costs less than the coarser step they would force on every other value."""
    if flat.size > _MSE_SAMPLE:
        flat = np.random.default_rng(0).choice(flat, _MSE_SAMPLE, replace=False)
    lo, hi = min(float(flat.min()), 0.0), max(float(flat.max()), 0.0)
    if hi - lo <= 0.0:
        return lo, hi
    best, best_error = (lo, hi), np.inf
    for fraction in np.linspace(1.0, 0.125, _MSE_STEPS):
        a, b = lo * fraction, hi * fraction
        scale = (b - a) / 255.0
        zero = np.round(-a / scale)
        q = np.clip(np.round(flat / scale) + zero, 0, 255)
        error = float(np.mean(((q - zero) * scale - flat) ** 2))
        if error < best_error:
            best, best_error = (a, b), error
    return best

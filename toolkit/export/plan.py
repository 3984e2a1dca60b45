"""What a quantize step decided, handed to the exporters: `QuantizationPlan`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

SCHEMES = ("fp16", "int8-dynamic", "int8-static", "qat", "mixed")
OBSERVERS = ("minmax", "percentile", "mean-std")
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
        observer: activation range statistic: `minmax`, `percentile` or `mean-std`.
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
            `100 - percentile`-th percentiles) or `mean-std` (mean ± k·σ, within the extremes).
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
    return min(lo, 0.0), max(hi, 0.0)

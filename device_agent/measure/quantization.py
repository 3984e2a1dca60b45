"""The one affine int8/uint8 formula, shared by the agent and the host (numpy only).

TFLite's reference (``AffineQuantize``): ``q = clamp(round(x / scale) + zero_point, qmin, qmax)``
in float32, with ``round`` being ``std::round`` (half away from zero). Rounding after adding the
zero point, or rounding half to even (numpy's ``np.round``), gives other integers on exact
half-steps, so the host and the device would feed the model different inputs.
"""

from __future__ import annotations

import numpy as np


def quantize(values: np.ndarray, scale: float, zero_point: int, dtype: np.dtype) -> np.ndarray:
    """Float values -> integers of `dtype`: round(x / scale) + zero_point, clamped to `dtype`.

    `round` is half away from zero, as TFLite's reference kernel (std::round).
    """
    dtype = np.dtype(dtype)
    info = np.iinfo(dtype)
    steps = (np.asarray(values, dtype=np.float32) / np.float32(scale)).astype(np.float64)
    q = np.sign(steps) * np.floor(np.abs(steps) + 0.5) + int(zero_point)  # exact in float64
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Integers -> float32: (q - zero_point) * scale."""
    return ((np.asarray(values).astype(np.float32) - zero_point) * np.float32(scale)).astype(
        np.float32)

"""Inputs for benchmarks and Infer, in each model input's own dtype, range and shape.

Quantized models get integers across their representable range; Infer callers send
floats, which are quantized here with the tensor's scale and zero point (and outputs are
dequantized), so nobody handles int8 by hand.
"""

from __future__ import annotations

import numpy as np

from device_agent.measure.quantization import dequantize, quantize
from device_agent.runtimes.base import TensorInfo


def concrete_shape(spec: TensorInfo, batch: int = 1) -> tuple[int, ...]:
    """Replaces dynamic dimensions: the first with `batch`, others with 1."""
    return tuple((batch if i == 0 else 1) if d < 0 else d for i, d in enumerate(spec.shape))


def benchmark_inputs(specs: list[TensorInfo], seed: int = 0) -> list[np.ndarray]:
    """Makes one random array per input in the input's dtype and a plausible range."""
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in specs:
        shape = concrete_shape(spec)
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            arrays.append(rng.standard_normal(shape).astype(dtype))
        elif dtype.kind in "iu":
            info = np.iinfo(dtype)
            if spec.quantized:
                low, high = info.min, info.max
            else:  # ids/indices: keep them small so gathers stay in range
                low, high = 0, min(info.max, 10)
            arrays.append(rng.integers(low, high, size=shape, endpoint=True).astype(dtype))
        elif dtype.kind == "b":
            arrays.append(rng.integers(0, 1, size=shape, endpoint=True).astype(bool))
        else:
            raise ValueError(
                f"input {spec.name!r}: cannot make benchmark data of dtype {spec.dtype}"
            )
    return arrays


def to_model_input(array: np.ndarray, spec: TensorInfo) -> np.ndarray:
    """Converts a caller's array to the input's dtype, quantizing floats for int8 inputs."""
    dtype = np.dtype(spec.dtype)
    if spec.quantized and array.dtype.kind == "f":
        return quantize(array, spec.scale, spec.zero_point, dtype)
    return np.ascontiguousarray(array.astype(dtype, copy=False))


def from_model_output(array: np.ndarray, spec: TensorInfo) -> np.ndarray:
    """Dequantizes an int8/uint8 output to float32; other outputs pass through."""
    if spec.quantized:
        return dequantize(array, spec.scale, spec.zero_point)
    return array

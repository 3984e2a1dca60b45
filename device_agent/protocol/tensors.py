"""NumPy arrays ⇄ `Tensor` messages (C-order, little-endian), used by both sides."""

from __future__ import annotations

import numpy as np

from device_agent.protocol import edgeloop_pb2 as pb


def tensor_to_array(t: pb.Tensor) -> np.ndarray:
    """Decodes a Tensor message; raises ValueError when data and shape disagree."""
    dtype = np.dtype(t.dtype).newbyteorder("<")
    array = np.frombuffer(t.data, dtype=dtype)
    expected = int(np.prod(t.shape)) if t.shape else 1
    if array.size != expected:
        raise ValueError(f"tensor {t.name!r}: {array.size} values for shape {list(t.shape)}")
    return array.reshape(tuple(t.shape)).astype(dtype.newbyteorder("="))


def array_to_tensor(a: np.ndarray, name: str = "") -> pb.Tensor:
    """Encodes an array as a Tensor message."""
    a = np.ascontiguousarray(a)
    little = a.astype(a.dtype.newbyteorder("<"), copy=False)
    return pb.Tensor(name=name, shape=list(a.shape), dtype=a.dtype.name, data=little.tobytes())

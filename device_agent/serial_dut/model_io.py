"""A .tflite model's inputs and outputs, read from its flatbuffer (TFLite Micro's schema
reader) without starting an interpreter: what the host needs to make a DUT's input bytes."""

from __future__ import annotations

from typing import Union

import numpy as np

from device_agent.runtimes.base import TensorInfo

TFLITE_TYPES = {
    0: "float32",
    1: "float16",
    2: "int32",
    3: "uint8",
    4: "int64",
    6: "bool",
    7: "int16",
    9: "int8",
    10: "float64",
    12: "uint64",
    15: "uint32",
    16: "uint16",
}
"""The schema's TensorType numbers this reader knows, as numpy dtype names."""


class ModelIoError(ValueError):
    """The file is not a .tflite this reader understands (names the file and why)."""


def tflite_io(source: Union[str, bytes]) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """(inputs, outputs) of subgraph 0 of a .tflite file (a path or its bytes)."""
    from tflite_micro.python.tflite_micro import runtime

    where = source if isinstance(source, str) else "model"
    data = open(source, "rb").read() if isinstance(source, str) else source
    if data[4:8] != b"TFL3":
        raise ModelIoError(f"{where}: not a .tflite flatbuffer (a DUT input spec needs one)")
    try:
        graph = runtime.convert_bytearray_to_object(bytearray(data)).subgraphs[0]
    except Exception as exc:  # noqa: BLE001 - the schema reader raises many kinds
        raise ModelIoError(f"{where}: unreadable flatbuffer ({exc})") from None

    def info(index: int, i: int, prefix: str) -> TensorInfo:
        t = graph.tensors[index]
        if t.type not in TFLITE_TYPES:
            raise ModelIoError(f"{where}: {prefix} {i}: tensor type {t.type} is not supported")
        q = t.quantization
        scales = None if q is None or q.scale is None else list(q.scale)
        zeros = None if q is None or q.zeroPoint is None else list(q.zeroPoint)
        quantized = bool(scales) and TFLITE_TYPES[t.type] in ("int8", "uint8", "int16")
        return TensorInfo(
            name=f"{prefix}_{i}",
            shape=tuple(int(d) for d in t.shape),
            dtype=TFLITE_TYPES[t.type],
            scale=float(scales[0]) if quantized else None,
            zero_point=int(zeros[0]) if quantized and zeros else (0 if quantized else None),
        )

    inputs = [info(index, i, "input") for i, index in enumerate(graph.inputs)]
    outputs = [info(index, i, "output") for i, index in enumerate(graph.outputs)]
    return inputs, outputs


def input_bytes(arrays: list[np.ndarray]) -> bytes:
    """The DUT's input buffer: each input's bytes in order, little-endian."""
    return b"".join(
        np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes() for a in arrays
    )

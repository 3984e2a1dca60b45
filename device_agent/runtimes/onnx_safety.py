"""Refuses ONNX models whose tensors live in external files: ONNX Runtime would open them.

An ONNX tensor with ``data_location = EXTERNAL`` names a file (``location``) that the runtime
reads next to the model. Pushed models sit in the agent's cache beside other models and its
index; a crafted model could read any of them (or, with ``..``, files beyond) into a weight and
send it back through Infer. Models pushed to the agent must be self-contained, so any external
tensor is refused, wherever it is: graph initializers, sparse initializers, node attributes,
subgraphs (If/Loop/Scan bodies), functions and training graphs.

A minimal protobuf reader (`device_agent/protocol/wire.py`; no `onnx` import: the agent
installs without it) walks only the message fields that can hold tensors, using field numbers
from onnx.proto (IR version 10).
"""

from __future__ import annotations

from device_agent.protocol.wire import LENGTH_DELIMITED, VARINT, WireFormatError, fields
from device_agent.runtimes.base import UnsafeModelError

__all__ = ["UnsafeModelError", "check_onnx"]

# message -> {field number: child message}, the paths along which a TensorProto can occur.
_CHILDREN: dict[str, dict[int, str]] = {
    "Model": {7: "Graph", 25: "Function", 20: "TrainingInfo"},
    "TrainingInfo": {1: "Graph", 2: "Graph"},
    "Graph": {1: "Node", 5: "Tensor", 15: "SparseTensor"},
    "Node": {5: "Attribute"},
    "Function": {7: "Node", 11: "Attribute"},
    "Attribute": {5: "Tensor", 6: "Graph", 10: "Tensor", 11: "Graph", 22: "SparseTensor",
                  23: "SparseTensor"},
    "SparseTensor": {1: "Tensor", 2: "Tensor"},
    "Tensor": {},
}
_TENSOR_NAME, _TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 8, 13, 14
_EXTERNAL = 1
_MAX_DEPTH = 64


def check_onnx(path: str) -> None:
    """Raises UnsafeModelError when the model at `path` has a tensor stored as external data.

    Raises:
        UnsafeModelError: names the tensor and the file it points at.
        ValueError: the file is not a protobuf this reader can walk (a load failure: nothing
            is handed to ONNX Runtime that was not checked).
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        _walk(memoryview(data), "Model", 0)
    except WireFormatError as exc:
        raise ValueError(f"not an ONNX model (protobuf unreadable: {exc})") from None


def _walk(buf: memoryview, kind: str, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise UnsafeModelError(f"model nests messages deeper than {_MAX_DEPTH} levels")
    children = _CHILDREN[kind]
    name, location, external = "", "", False
    for number, wire, value, _, _ in fields(buf):
        if kind == "Tensor":
            if number == _TENSOR_NAME and wire == LENGTH_DELIMITED:
                name = bytes(value).decode("utf-8", "replace")
            elif number == _TENSOR_DATA_LOCATION and wire == VARINT and value == _EXTERNAL:
                external = True
            elif number == _TENSOR_EXTERNAL_DATA and wire == LENGTH_DELIMITED:
                external = True
                location = location or _entry_value(value, b"location")
        elif number in children and wire == LENGTH_DELIMITED:
            _walk(value, children[number], depth + 1)
    if external:
        raise UnsafeModelError(
            f"tensor {name!r} is stored as external data ({location or 'no location'}): "
            "loading it would read another file; push a self-contained model "
            "(torch.onnx.export(..., external_data=False))"
        )


def _entry_value(buf: memoryview, key: bytes) -> str:
    """The value of a StringStringEntryProto (key=1, value=2) when its key matches."""
    found = {f.number: bytes(f.value) for f in fields(buf) if f.wire_type == LENGTH_DELIMITED}
    return found.get(2, b"").decode("utf-8", "replace") if found.get(1) == key else ""

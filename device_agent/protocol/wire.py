"""Protobuf's wire format read directly: varints, and the fields of one message as views.

For the few places the agent reads protobuf bytes without the generated code: a pushed
chunk, whose data must not be copied (`chunks.parse_chunk`), and an ONNX model, which the
agent checks without importing `onnx` (`runtimes/onnx_safety.py`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple, Optional, Union

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5
_FIXED_WIDTH = {FIXED64: 8, FIXED32: 4}


class WireFormatError(ValueError):
    """The bytes are not a well-formed protobuf message; the message says where it broke."""


class Field(NamedTuple):
    """One field: its number and wire type, its value (an int for varints, a view for
    length-delimited fields, None for fixed-width ones), and the span [start, end) of the
    whole field, tag included, in the message."""

    number: int
    wire_type: int
    value: Optional[Union[int, memoryview]]
    start: int
    end: int


def read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it."""
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise WireFormatError("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def fields(buf: memoryview) -> Iterator[Field]:
    """The fields of the message in `buf`, in wire order (groups, long deprecated, refused)."""
    pos = 0
    while pos < len(buf):
        start = pos
        key, pos = read_varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        value: Optional[Union[int, memoryview]] = None
        if number == 0:
            raise WireFormatError("field number 0")
        if wire_type == VARINT:
            value, pos = read_varint(buf, pos)
        elif wire_type == LENGTH_DELIMITED:
            size, pos = read_varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire_type in _FIXED_WIDTH:
            pos += _FIXED_WIDTH[wire_type]
        else:
            raise WireFormatError(f"unsupported wire type {wire_type} in field {number}")
        if pos > len(buf):
            raise WireFormatError(f"field {number} runs past the end of the message")
        yield Field(number, wire_type, value, start, pos)

"""PushModel chunks on the wire, written and read without copying their data through protobuf.

upb's `SerializeToString` copies a large `bytes` field slowly: 87 ms for the 64 chunks of a
64 MiB model here, against 5 ms to read the file, which made the client the bottleneck of a
push. A chunk's wire bytes are its other fields serialized as usual followed by the `data`
field written by hand (tag, length, bytes): protobuf parses fields in any order, so the agent
would read it with the generated `ModelChunk.FromString`. The agent reads it with
`parse_chunk` instead, whose data is a view of the received bytes (see
`device_agent.server.handlers`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from device_agent.protocol import edgeloop_pb2 as pb
from device_agent.protocol import wire

_DATA_FIELD = pb.ModelChunk.DESCRIPTOR.fields_by_name["data"].number
DATA_TAG = bytes([(_DATA_FIELD << 3) | wire.LENGTH_DELIMITED])


@dataclass(frozen=True)
class OutgoingChunk:
    """One ModelChunk to send: every field but `data` in `header`, the data as raw bytes
    (or a view of a buffer the sender reuses once this chunk is serialized)."""

    data: bytes | memoryview
    header: pb.ModelChunk = field(default_factory=pb.ModelChunk)


def varint(value: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative integer."""
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def serialize_chunk(chunk: OutgoingChunk) -> bytes:
    """The wire bytes of `chunk`, equal in meaning to ModelChunk(header fields, data=data)."""
    if not chunk.data:
        return chunk.header.SerializeToString()
    return b"".join(
        (chunk.header.SerializeToString(), DATA_TAG, varint(len(chunk.data)), chunk.data)
    )


@dataclass(frozen=True)
class IncomingChunk:
    """One ModelChunk as the agent receives it: the data a view of the message's own bytes."""

    data: memoryview
    sha256: str = ""
    name: str = ""
    size_bytes: int = 0
    format: int = 0


class ChunkParseError(ValueError):
    """The bytes are not a well-formed ModelChunk."""


def parse_chunk(raw: bytes) -> IncomingChunk:
    """A ModelChunk's wire bytes as an IncomingChunk, without copying `data`: the other fields
    are parsed by the generated code (which skips unknown fields), and the last `data` field
    wins, as in protobuf. Raises ChunkParseError on malformed bytes."""
    view = memoryview(raw)
    data = view[0:0]
    header = bytearray()
    try:
        for field_ in wire.fields(view):
            if field_.number != _DATA_FIELD:
                header += view[field_.start : field_.end]
            elif field_.wire_type != wire.LENGTH_DELIMITED:
                raise wire.WireFormatError("its data field is not length-delimited")
            else:
                data = field_.value
        head = pb.ModelChunk.FromString(bytes(header))
    except (wire.WireFormatError, DecodeError) as exc:
        raise ChunkParseError(f"malformed ModelChunk: {exc}") from None
    return IncomingChunk(
        data=data,
        sha256=head.sha256,
        name=head.name,
        size_bytes=head.size_bytes,
        format=head.format,
    )

"""PushModel chunks on the wire, written without copying their data through protobuf.

upb's `SerializeToString` copies a large `bytes` field slowly: 87 ms for the 64 chunks of a
64 MiB model here, against 5 ms to read the file, which made the client the bottleneck of a
push. A chunk's wire bytes are its other fields serialized as usual followed by the `data`
field written by hand (tag, length, bytes): protobuf parses fields in any order, so the agent
reads it with the generated `ModelChunk.FromString` as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from device_agent.protocol import edgeloop_pb2 as pb

_DATA_FIELD = pb.ModelChunk.DESCRIPTOR.fields_by_name["data"].number
_LENGTH_DELIMITED = 2  # protobuf wire type of bytes fields
DATA_TAG = bytes([(_DATA_FIELD << 3) | _LENGTH_DELIMITED])


@dataclass(frozen=True)
class OutgoingChunk:
    """One ModelChunk to send: every field but `data` in `header`, the data as raw bytes."""

    data: bytes
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

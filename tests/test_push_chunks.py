"""PushModel chunks written by hand read back, through the generated protobuf code, as the
messages they stand for; the agent's parser reads any ModelChunk as protobuf does, without
copying its data, and refuses malformed bytes; a real agent stores what the client pushes."""

from __future__ import annotations

import hashlib
import os

import pytest

from device_agent.protocol import edgeloop_pb2 as pb
from device_agent.protocol.chunks import (
    ChunkParseError,
    OutgoingChunk,
    parse_chunk,
    serialize_chunk,
    varint,
)

HEADER = {"sha256": "ab" * 32, "name": "m.tflite", "size_bytes": 77, "format": 1}


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16_383, 16_384, 300_000, 1 << 20])
def test_a_hand_written_chunk_parses_as_the_message_it_stands_for(size):
    data = os.urandom(size)
    header = pb.ModelChunk(
        sha256="ab" * 32, name="m.tflite", size_bytes=size + 5, format=pb.MODEL_FORMAT_TFLITE
    )
    expected = pb.ModelChunk(
        sha256="ab" * 32,
        name="m.tflite",
        size_bytes=size + 5,
        format=pb.MODEL_FORMAT_TFLITE,
        data=data,
    )
    assert pb.ModelChunk.FromString(serialize_chunk(OutgoingChunk(data, header))) == expected
    assert pb.ModelChunk.FromString(serialize_chunk(OutgoingChunk(data))) == pb.ModelChunk(
        data=data
    )


def test_varint_matches_protobuf_for_lengths_around_each_byte_boundary():
    for n in (0, 1, 127, 128, 255, 16_383, 16_384, 2_097_151, 2_097_152):
        encoded = pb.ModelChunk(data=b"x" * n).SerializeToString()  # tag, varint(n), data
        assert encoded[1 : 1 + len(varint(n))] == varint(n) or n == 0
    assert varint(300) == bytes([0xAC, 0x02])  # protobuf's documented example


def test_a_pushed_model_is_stored_byte_for_byte(tmp_path):
    """Through a real agent: 3.5 chunks of data arrive whole and under their sha256."""
    from toolkit.transport.grpc_client import CHUNK_BYTES
    from toolkit.transport.local import local_agent

    path = tmp_path / "big.onnx"
    path.write_bytes(b"\x08" + os.urandom(CHUNK_BYTES * 3 + CHUNK_BYTES // 2))
    with local_agent(cache_dir=tmp_path / "cache") as client:
        sha = client.push(path)
        assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
        listed = {m.sha256: m for m in client.list_models()}
        assert listed[sha].size_bytes == path.stat().st_size
    stored = [p for p in (tmp_path / "cache").rglob(sha) if p.is_file()]
    assert len(stored) == 1 and stored[0].read_bytes() == path.read_bytes()


def _fields(chunk) -> tuple:
    return (bytes(chunk.data), chunk.sha256, chunk.name, chunk.size_bytes, chunk.format)


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16_384, 1 << 20])
def test_the_agents_parser_reads_a_chunk_as_protobuf_does(size):
    data = os.urandom(size)
    for message in (pb.ModelChunk(data=data, **HEADER), pb.ModelChunk(data=data)):
        for raw in (message.SerializeToString(), serialize_chunk(OutgoingChunk(data, message))):
            assert _fields(parse_chunk(raw)) == _fields(pb.ModelChunk.FromString(raw))


def test_the_parser_keeps_protobufs_rules_for_order_repeats_and_unknown_fields():
    head = pb.ModelChunk(**HEADER).SerializeToString()
    first, last = pb.ModelChunk(data=b"first").SerializeToString(), pb.ModelChunk(
        data=b"last"
    ).SerializeToString()
    unknown = varint(15 << 3) + varint(300) + varint((16 << 3) | 2) + varint(2) + b"zz"
    for raw in (first + head + last, head + unknown + first + last, unknown + first + head + last):
        assert _fields(parse_chunk(raw)) == _fields(pb.ModelChunk.FromString(raw))
        assert bytes(parse_chunk(raw).data) == b"last"  # the last scalar field wins


def test_the_parsed_data_is_a_view_of_the_received_bytes_not_a_copy():
    raw = serialize_chunk(OutgoingChunk(b"x" * 1000, pb.ModelChunk(**HEADER)))
    data = parse_chunk(raw).data
    assert isinstance(data, memoryview) and data.obj is raw


@pytest.mark.parametrize(
    "raw, words",
    [
        (b"\xff\xff\xff", "varint"),
        (b"\x2a\x05ab", "past the end"),
        (b"\x28\x05", "not length-delimited"),  # data (field 5) sent as a varint
        (b"\x0b", "wire type 3"),  # a group start
        (b"\x00\x01", "field number 0"),
        (b"\x0a\x02\xff\xfe", "malformed ModelChunk"),  # sha256 not valid UTF-8
    ],
)
def test_malformed_bytes_are_refused_with_a_reason(raw, words):
    with pytest.raises(ChunkParseError, match=words):
        parse_chunk(raw)

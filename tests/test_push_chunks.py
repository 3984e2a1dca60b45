"""PushModel chunks written by hand read back, through the generated protobuf code, as the
messages they stand for; a real agent stores what the client pushes with them."""

from __future__ import annotations

import hashlib
import os

import pytest

from device_agent.protocol import edgeloop_pb2 as pb
from device_agent.protocol.chunks import OutgoingChunk, serialize_chunk, varint


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

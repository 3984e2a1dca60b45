"""Bad pushes are refused with a clear status and leave nothing behind; model names are
display text only: never a path, control characters and escape sequences stripped."""

from __future__ import annotations

import hashlib

import grpc
import pytest

from device_agent.protocol import edgeloop_pb2 as pb
from device_agent.server.handlers import SERVICE
from tests.faults.agent_helpers import chunk_stream, fake_tflite, insecure_stub, push, sha
from toolkit.transport.local import AgentProcess


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    cache = tmp_path_factory.mktemp("bad-push-cache")
    agent = AgentProcess(cache, ("--max-model-mb", "1"))
    channel, stub = insecure_stub(agent)
    yield cache, stub, channel
    channel.close()
    agent.stop()


def _refused(stub, chunks) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        stub.PushModel(chunks, timeout=30)
    return caught.value


def _nothing_left(cache, stub, digest: str) -> None:
    assert not stub.HasModel(pb.ModelRef(sha256=digest), timeout=5).present
    assert not list((cache / "tmp").iterdir())
    assert not (cache / "models" / digest).exists()


@pytest.mark.parametrize(
    "case, status, words",
    [
        ("wrong sha", grpc.StatusCode.DATA_LOSS, "sha256 mismatch"),
        ("short data", grpc.StatusCode.DATA_LOSS, "received 4000 bytes, announced 8000"),
        ("long data", grpc.StatusCode.DATA_LOSS, "more than the announced 4000 bytes"),
        ("oversized", grpc.StatusCode.RESOURCE_EXHAUSTED, "at most 1048576 bytes"),
        ("zero size", grpc.StatusCode.INVALID_ARGUMENT, "must be positive"),
        ("bad digest text", grpc.StatusCode.INVALID_ARGUMENT, "not a sha256 hex digest"),
    ],
)
def test_a_bad_push_is_refused_with_its_status_and_leaves_nothing(served, case, status, words):
    """Guards the push checks (hash, announced size both ways, size limit before any data is
    written, digest syntax): each is refused with its status and its reason, and neither an
    entry nor a temporary file remains."""
    cache, stub, _ = served
    data = fake_tflite(4000, seed=len(case))
    digest = sha(data)
    first = {}
    if case == "wrong sha":
        digest = hashlib.sha256(b"other").hexdigest()
        first = {"sha256": digest}
    elif case == "short data":
        first = {"size_bytes": 8000}
    elif case == "long data":
        data, first = data + b"tail", {"sha256": digest, "size_bytes": 4000}
    elif case == "oversized":
        first = {"size_bytes": 2 * 2**20}
    elif case == "zero size":
        first = {"size_bytes": 0}
    elif case == "bad digest text":
        first = {"sha256": "../" + digest[:60]}
    error = _refused(stub, chunk_stream(data, **first))
    assert error.code() == status and words in error.details(), error.details()
    if case != "bad digest text":
        _nothing_left(cache, stub, digest)


@pytest.mark.parametrize("raw", [b"\xff\xff\xff", b"\x2a\x05ab", b"\x0b"])
def test_a_malformed_chunk_is_refused_as_an_invalid_argument_and_leaves_nothing(served, raw):
    """Bytes that are no ModelChunk: refused with INVALID_ARGUMENT (not UNKNOWN), no temporary
    file, and the agent goes on serving."""
    cache, stub, channel = served
    send = channel.stream_unary(
        f"/{SERVICE}/PushModel",
        request_serializer=lambda b: b,
        response_deserializer=pb.PushModelReply.FromString,
    )
    with pytest.raises(grpc.RpcError) as caught:
        send(iter([raw]), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed ModelChunk" in caught.value.details()
    assert not list((cache / "tmp").iterdir())
    assert stub.Health(pb.HealthRequest(), timeout=5) is not None


def test_an_empty_push_is_refused(served):
    """Guards the first-chunk read: a push with no chunk at all is INVALID_ARGUMENT."""
    _, stub, _ = served
    error = _refused(stub, iter(()))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "empty push" in error.details()


@pytest.mark.parametrize(
    "name",
    [
        "../../../../tmp/edgeloop-escaped",
        "/etc/passwd",
        "model\x00.tflite",
        "\x1b[2J\x1b[31mred\x1b[0m\x07model",
        "evil\u202egnp.tflite",
        "x" * 5000,
    ],
)
def test_a_model_name_is_display_text_never_a_path(served, name, tmp_path):
    """Guards name handling: a traversal, NUL, terminal escape or bidi override in a name
    is stored as harmless display text (control and format characters removed, at most
    200 characters); the file lives under its sha256 and nowhere else."""
    cache, stub, _ = served
    data = fake_tflite(3000, seed=hash(name) % 1000)
    reply = push(stub, data, name)
    assert reply.sha256 == sha(data)
    listed = {m.sha256: m.name for m in stub.ListModels(pb.ListModelsRequest(), timeout=5).models}
    shown = listed[sha(data)]
    assert shown.isprintable() and len(shown) <= 200
    assert "\x1b" not in shown and "\x00" not in shown and "\u202e" not in shown
    assert (cache / "models" / sha(data)).is_file()
    assert {p.name for p in (cache / "models").iterdir()} <= set(listed)
    assert not any((cache.parent).glob("**/edgeloop-escaped"))


def test_the_cli_strips_control_characters_from_names_it_prints():
    """Guards the CLI's one display helper: names printed by `profile`, `evaluate` and
    `results` lose escape sequences' ESC, NUL, BEL and bidi overrides."""
    from toolkit.cli.display import printable

    assert printable("\x1b[2J\x1b[31mred\x00\x07\u202emodel.tflite") == "[2J[31mredmodel.tflite"
    assert printable("x" * 500, 28) == "x" * 28

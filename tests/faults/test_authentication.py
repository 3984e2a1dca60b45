"""Beyond loopback every client is authenticated: the agent refuses to start with TLS alone,
and a client without the token or without a certificate from the client CA gets nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from device_agent.protocol import edgeloop_pb2 as pb
from device_agent.protocol import edgeloop_pb2_grpc as rpc
from tests.faults.agent_helpers import chunk_stream, fake_tflite, make_pki, wait_for

READY = "edgeloop-agent listening on "
TOKEN = "tok-7f3a9c1e5b2d4a6f8e0c"


def _env(**more: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "EDGELOOP_AGENT_TOKEN"}
    return {**env, **more}


def _serve(tmp_path: Path, *args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "device_agent", "serve", "--port", "0",
         "--cache-dir", str(tmp_path / "cache"), *args],
        capture_output=True, text=True, timeout=60, env=env or _env(),
    )


class _Agent:
    """A real agent whose stdout and stderr go to files, read after it stops."""

    def __init__(self, tmp_path: Path, *args: str, env=None) -> None:
        self.out, self.err = tmp_path / "agent.out", tmp_path / "agent.err"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "device_agent", "serve", "--host", "0.0.0.0", "--port", "0",
             "--cache-dir", str(tmp_path / "cache"), "--exit-with-parent", *args],
            stdout=self.out.open("w"), stderr=self.err.open("w"), env=env or _env(),
        )
        wait_for(lambda: READY in self.out.read_text() or self.proc.poll() is not None, 60,
                 "the agent's ready line")
        assert self.proc.poll() is None, self.err.read_text()
        line = next(ln for ln in self.out.read_text().splitlines() if ln.startswith(READY))
        self.port = int(line.rsplit(":", 1)[1])

    def channel(self, pki, cert: bool = True, outsider: bool = False) -> grpc.Channel:
        pair = None
        if outsider:
            pair = (pki.outsider_key.read_bytes(), pki.outsider_cert.read_bytes())
        elif cert:
            pair = (pki.client_key.read_bytes(), pki.client_cert.read_bytes())
        creds = grpc.ssl_channel_credentials(
            root_certificates=pki.ca.read_bytes(),
            private_key=pair[0] if pair else None,
            certificate_chain=pair[1] if pair else None,
        )
        return grpc.secure_channel(f"127.0.0.1:{self.port}", creds)

    def stop(self) -> str:
        self.proc.terminate()
        self.proc.wait(timeout=20)
        return self.out.read_text() + self.err.read_text()


def test_tls_without_client_authentication_beyond_loopback_is_refused_at_start(tmp_path):
    """Guards the start-up policy: TLS alone (anyone can take the server's certificate as
    their root) and plaintext are refused beyond loopback, each with one line naming what
    is missing; a world-readable token file is refused too."""
    pki = make_pki(tmp_path)
    tls = ("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key))
    done = _serve(tmp_path, "--host", "0.0.0.0", *tls)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "listening on" not in done.stdout
    line = done.stderr.strip()
    assert len(line.splitlines()) == 1 and "client authentication" in line
    assert "--client-ca" in line and "--token-file" in line and "TLS (" not in line

    done = _serve(tmp_path, "--host", "0.0.0.0")
    assert done.returncode == 2 and "TLS (--tls-cert and --tls-key)" in done.stderr

    done = _serve(tmp_path, "--host", "0.0.0.0", env=_env(EDGELOOP_AGENT_TOKEN=TOKEN))
    assert done.returncode == 2 and "TLS (--tls-cert" in done.stderr  # a token needs TLS

    loose = tmp_path / "loose-token"
    loose.write_text(TOKEN)
    loose.chmod(0o644)
    done = _serve(tmp_path, "--host", "0.0.0.0", *tls, "--token-file", str(loose))
    assert done.returncode == 2 and "readable or writable by every user" in done.stderr
    assert TOKEN not in done.stdout + done.stderr


def test_wrong_or_missing_token_is_unauthenticated_and_the_token_is_never_printed(tmp_path):
    """Guards the token check on every kind of call (unary, client-streaming push,
    server-streaming benchmark): a client without the token, or with a wrong one, gets
    UNAUTHENTICATED and changes nothing; the token comes from a file and never appears in
    the agent's output, whose start line says which authentication is in force."""
    pki = make_pki(tmp_path)
    token_file = tmp_path / "token"
    token_file.write_text(f"  {TOKEN}\n")
    token_file.chmod(0o600)
    agent = _Agent(tmp_path, "--tls-cert", str(pki.server_cert), "--tls-key",
                   str(pki.server_key), "--token-file", str(token_file))
    try:
        stub = rpc.DeviceAgentStub(agent.channel(pki, cert=False))
        data = fake_tflite(2048)
        for metadata in ((), (("authorization", "Bearer wrong"),),
                         (("authorization", f"Bearer {TOKEN}x"),), (("authorization", TOKEN),)):
            calls = [
                lambda md=metadata: stub.Health(pb.HealthRequest(), metadata=md, timeout=10),
                lambda md=metadata: stub.PushModel(chunk_stream(data), metadata=md, timeout=10),
                lambda md=metadata: list(stub.Benchmark(pb.BenchmarkRequest(sha256="0" * 64),
                                                        metadata=md, timeout=10)),
            ]
            for call in calls:
                with pytest.raises(grpc.RpcError) as caught:
                    call()
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, metadata
        good = (("authorization", f"Bearer {TOKEN}"),)
        assert not stub.ListModels(pb.ListModelsRequest(), metadata=good, timeout=10).models
        assert stub.Health(pb.HealthRequest(), metadata=good, timeout=10).ok
        assert stub.PushModel(chunk_stream(data), metadata=good, timeout=10).sha256
    finally:
        output = agent.stop()
    assert TOKEN not in output
    assert f"edgeloop-agent auth: TLS, bearer token from --token-file {token_file}" in output
    assert "warn" not in output.lower()


def test_mutual_tls_refuses_a_client_without_a_certificate_from_the_client_ca(tmp_path):
    """Guards mTLS: with --client-ca, a client with no certificate or a self-signed one
    cannot even complete the handshake; one with a certificate from the CA is served."""
    pki = make_pki(tmp_path)
    agent = _Agent(tmp_path, "--tls-cert", str(pki.server_cert), "--tls-key",
                   str(pki.server_key), "--client-ca", str(pki.ca))
    try:
        for channel in (agent.channel(pki, cert=False), agent.channel(pki, outsider=True)):
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as caught:
                rpc.DeviceAgentStub(channel).Health(pb.HealthRequest(), timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - started < 10
        stub = rpc.DeviceAgentStub(agent.channel(pki))
        assert stub.Health(pb.HealthRequest(), timeout=10).ok
    finally:
        output = agent.stop()
    assert f"client certificates signed by {pki.ca}" in output

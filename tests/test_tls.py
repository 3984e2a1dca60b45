"""An agent with TLS (and a bearer token) is reached only with the right CA and token."""

from __future__ import annotations

import pytest

from tests.fixtures_tls import self_signed_cert
from toolkit.devices.profile import TlsConfig
from toolkit.errors import AgentError
from toolkit.transport.grpc_client import DeviceClient
from toolkit.transport.local import AgentProcess


def test_tls_agent_with_token_accepts_only_the_right_client(tmp_path, monkeypatch):
    cert, key = self_signed_cert(tmp_path)
    agent = AgentProcess(
        tmp_path / "cache",
        ("--tls-cert", str(cert), "--tls-key", str(key)),
        env={"EDGELOOP_AGENT_TOKEN": "s3cret"},
    )
    try:
        monkeypatch.setenv("TEST_AGENT_TOKEN", "s3cret")
        good = TlsConfig(ca_file=str(cert), token_env="TEST_AGENT_TOKEN")
        with DeviceClient(agent.address, tls=good) as client:
            assert client.health().ok
        monkeypatch.setenv("TEST_AGENT_TOKEN", "wrong")
        with pytest.raises(AgentError, match="missing or wrong agent token"):
            DeviceClient(
                agent.address, tls=TlsConfig(ca_file=str(cert), token_env="TEST_AGENT_TOKEN")
            )
        with pytest.raises(AgentError):  # plaintext client against a TLS agent
            DeviceClient(agent.address, connect_timeout_s=3)
    finally:
        agent.stop()

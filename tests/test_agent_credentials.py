"""Credentials read once (`AgentCredentials.resolve`) reach an agent as data: a client built from
them reads no file and no environment variable, and no secret shows in their repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures_tls import self_signed_cert
from toolkit.devices.profile import TlsConfig
from toolkit.errors import AgentError, ConfigError
from toolkit.transport.credentials import AgentCredentials
from toolkit.transport.grpc_client import DeviceClient
from toolkit.transport.local import AgentProcess


@pytest.fixture()
def mtls_agent(tmp_path):
    """A real agent wanting TLS, a client certificate and a token; the client's files."""
    server_cert, server_key = self_signed_cert(tmp_path, [])
    (tmp_path / "client").mkdir()
    client_cert, client_key = self_signed_cert(tmp_path / "client", [])
    agent = AgentProcess(
        tmp_path / "cache",
        ("--tls-cert", str(server_cert), "--tls-key", str(server_key),
         "--client-ca", str(client_cert)),
        env={"EDGELOOP_AGENT_TOKEN": "agent-s3cret"},
    )  # fmt: skip
    try:
        yield agent, TlsConfig(ca_file=str(server_cert), cert_file=str(client_cert),
                               key_file=str(client_key), token_env="BOARD_TOKEN")
    finally:
        agent.stop()


def test_resolved_credentials_reach_the_agent_after_their_files_and_variable_are_gone(
    mtls_agent, monkeypatch
):
    agent, tls = mtls_agent
    monkeypatch.setenv("BOARD_TOKEN", "agent-s3cret")
    credentials = AgentCredentials.resolve(tls)
    for path in (tls.ca_file, tls.cert_file, tls.key_file):
        Path(path).unlink()
    monkeypatch.delenv("BOARD_TOKEN")

    with DeviceClient(agent.address, credentials=credentials) as client:
        assert client.health().ok
    with pytest.raises(AgentError, match="missing or wrong agent token"):
        DeviceClient(agent.address, credentials=AgentCredentials(
            ca=credentials.ca, cert=credentials.cert, key=credentials.key, token="wrong"))


def test_credentials_never_show_their_secrets():
    credentials = AgentCredentials(token="tok-s3cret", ca=b"CA-PEM", cert=b"CERT-PEM",
                                   key=b"KEY-PEM", server_name="board.lab")
    shown = repr(credentials) + str(credentials)
    for secret in ("tok-s3cret", "CA-PEM", "CERT-PEM", "KEY-PEM"):
        assert secret not in shown
    assert shown.startswith("AgentCredentials(mTLS, a token, server_name='board.lab')")


def test_an_unreadable_tls_file_is_named_by_its_field(tmp_path):
    tls = TlsConfig(ca_file=str(tmp_path / "missing-ca.pem"))
    with pytest.raises(ConfigError, match=r"device lab-1: tls.ca_file: cannot read .*missing-ca"):
        DeviceClient("127.0.0.1:1", tls=tls, name="lab-1")

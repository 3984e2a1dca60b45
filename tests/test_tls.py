"""An agent with TLS (and a bearer token) is reached only with the right CA and token."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import pytest

from toolkit.devices.profile import TlsConfig
from toolkit.errors import AgentError
from toolkit.transport.grpc_client import DeviceClient
from toolkit.transport.local import AgentProcess


def _self_signed(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgeloop-test-agent")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "agent.pem", folder / "agent.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_agent_with_token_accepts_only_the_right_client(tmp_path, monkeypatch):
    cert, key = _self_signed(tmp_path)
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

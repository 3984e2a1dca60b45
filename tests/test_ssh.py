"""SSH against a REAL OpenSSH sshd on 127.0.0.1: host keys, user keys, jump host, bootstrap of
the agent into a fresh venv (tflite-runtime with numpy<2, not the host's environment) from an
uploaded wheelhouse, then profiling through the tunnel and over the one-shot `ssh` transport.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from dataclasses import fields
from pathlib import Path

import pytest

from tests.fixtures_ssh import sshd  # noqa: F401 - the fixture
from tests.model_files import build_tflite, tiny_cnn
from toolkit.devices.profile import DeviceProfile
from toolkit.errors import AgentError, AgentUnreachableError, HostKeyError
from toolkit.measurement import BenchmarkOptions, Measurement
from toolkit.transport.ssh.bootstrap import BootstrapOptions, bootstrap_device
from toolkit.transport.ssh.connection import connect
from toolkit.transport.ssh.oneshot import open_oneshot_client
from toolkit.transport.ssh.tunnel import open_tunnel_client

DEVICE_REQUIREMENTS = ("tflite-runtime==2.14.0", "numpy<2")
# Wheelhouses survive sessions (EDGELOOP_HOME is per session) so reruns do not download again.
WHEELHOUSE_CACHE = Path(os.environ.get("EDGELOOP_TEST_WHEELHOUSE",
                                       Path(tempfile.gettempdir()) / "edgeloop-test-wheelhouses"))
QUICK = BenchmarkOptions(warmup_runs=2, min_runs=20, min_seconds=0.05)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unknown_host_key_is_rejected_with_its_fingerprint(sshd):  # noqa: F811
    with pytest.raises(HostKeyError) as caught:
        connect(sshd.ssh_config(known_hosts=str(sshd.empty_known_hosts)))
    message = str(caught.value)
    assert sshd.host_fingerprint in message and "--accept-new-host-key" in message
    assert sshd.empty_known_hosts.read_text() == ""  # nothing recorded without the opt-in


def test_accepting_a_new_host_key_records_it_and_later_connections_verify_it(sshd, tmp_path):  # noqa: F811
    known = tmp_path / "known_hosts"
    with connect(sshd.ssh_config(known_hosts=str(known)), accept_new_host_key=True) as conn:
        assert conn.run("echo hello").stdout == "hello\n"
    assert known.read_text().startswith(f"[127.0.0.1]:{sshd.port} ssh-ed25519 ")
    with connect(sshd.ssh_config(known_hosts=str(known))) as conn:
        assert conn.run("exit 0").exit_status == 0


def test_a_changed_host_key_is_rejected(sshd, tmp_path):  # noqa: F811
    known = tmp_path / "known_hosts"
    other = sshd.wrong_key.with_suffix(".pub").read_text().split()
    known.write_text(f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n")
    with pytest.raises(HostKeyError, match="does NOT match"):
        connect(sshd.ssh_config(known_hosts=str(known)))


def test_a_wrong_user_key_is_rejected_naming_user_host_and_port(sshd):  # noqa: F811
    with pytest.raises(AgentUnreachableError) as caught:
        connect(sshd.ssh_config(key_file=str(sshd.wrong_key)))
    message = str(caught.value)
    assert f"{sshd.user}@127.0.0.1:{sshd.port}" in message
    assert "authentication failed" in message and str(sshd.wrong_key) in message


def test_a_jump_host_reaches_the_device_through_a_direct_tcpip_channel(sshd):  # noqa: F811
    config = sshd.ssh_config(jump_host=f"{sshd.user}@127.0.0.1:{sshd.port}")
    before = sshd.accepted_logins()
    with connect(config) as conn:
        assert conn.run("echo via-jump").stdout == "via-jump\n"
    assert sshd.accepted_logins() - before == 2  # one login on the jump host, one on the device


def test_remote_command_failures_carry_the_exit_status_and_output(sshd):  # noqa: F811
    with connect(sshd.ssh_config()) as conn:
        with pytest.raises(AgentError, match="exited 3.*boom"):
            conn.run("echo boom >&2; exit 3")
        assert conn.run("exit 4", check=False).exit_status == 4


@pytest.fixture(scope="module")
def tflite_model(tmp_path_factory) -> Path:
    return build_tflite(tiny_cnn(), tmp_path_factory.mktemp("ssh-model") / "tiny.tflite")


@pytest.fixture(scope="module")
def device(sshd, tmp_path_factory):  # noqa: F811
    """"The device": an agent bootstrapped over SSH into a fresh folder, stopped afterwards."""
    agent_dir = tmp_path_factory.mktemp("device") / "agent"
    config = sshd.ssh_config(python=sys.executable, agent_dir=str(agent_dir),
                             agent_port=_free_port())
    profile = DeviceProfile(name="sshd-device", tunnel="ssh", ssh=config)
    options = BootstrapOptions(requirements=DEVICE_REQUIREMENTS, wheelhouse_cache=WHEELHOUSE_CACHE,
                               mode="process")
    result = bootstrap_device(profile, options)
    try:
        yield profile, result, options
    finally:
        pid_file = agent_dir / "agent.pid"
        if pid_file.is_file():
            subprocess.run(["kill", pid_file.read_text().strip()], check=False)


def test_bootstrap_installs_a_separate_environment_with_tflite_runtime_and_numpy_1(device):
    profile, result, _ = device
    assert result.mode == "process" and result.pid
    tflite = result.info.runtime("tflite")
    assert tflite.available and tflite.module == "tflite_runtime" and tflite.version == "2.14.0"
    venv_python = Path(result.agent_dir) / "venv" / "bin" / "python"
    probe = subprocess.run(
        [str(venv_python), "-c", "import numpy, importlib.util as u; print(numpy.__version__, "
         "u.find_spec('torch') is None, u.find_spec('ai_edge_litert') is None)"],
        capture_output=True, text=True, check=True).stdout.split()
    assert probe[0].startswith("1.") and probe[1:] == ["True", "True"]


def test_profiling_through_the_tunnel_and_over_the_ssh_transport_gives_the_same_record(
        device, tflite_model):
    profile, result, _ = device
    with open_tunnel_client(profile) as client:
        assert client.address.startswith("127.0.0.1:")
        via_tunnel = client.benchmark(tflite_model, QUICK)
    oneshot = DeviceProfile(name="sshd-oneshot", transport="ssh", ssh=profile.ssh)
    with open_oneshot_client(oneshot) as client:
        via_ssh = client.benchmark(tflite_model, QUICK)

    for m in (via_tunnel, via_ssh):
        assert isinstance(m, Measurement) and m.ok, m.error_message
        assert m.runtime == "tflite" and m.runtime_version == "2.14.0"
        assert m.latency.n >= QUICK.min_runs and m.latency.p90_ms > 0
        assert m.device_id == result.info.device_id
    assert via_tunnel.model_sha256 == via_ssh.model_sha256
    assert via_tunnel.to_row().keys() == via_ssh.to_row().keys()
    assert [f.name for f in fields(via_tunnel)] == [f.name for f in fields(via_ssh)]
    assert Measurement.from_json(via_ssh.to_json()) == via_ssh


def test_ssh_transport_does_not_upload_a_model_the_device_already_holds(device, tflite_model):
    profile, _, _ = device
    oneshot = DeviceProfile(name="sshd-oneshot", transport="ssh", ssh=profile.ssh)
    with open_oneshot_client(oneshot) as client:
        sha = client.push(tflite_model)
        remote = f"{client.models_dir}/{sha}"
        before = client.conn.sftp.stat(remote).st_mtime
        client.conn.sftp.utime(remote, (before - 100, before - 100))  # mark the held copy
        assert client.push(tflite_model) == sha
        assert client.conn.sftp.stat(remote).st_mtime == before - 100
        assert client.has_model(sha) and not client.has_model("0" * 64)


def test_bootstrapping_again_upgrades_in_place(device):
    profile, first, options = device
    again = bootstrap_device(profile, options)
    assert again.pid and again.pid != first.pid
    assert not Path(f"/proc/{first.pid}").exists() or b"device_agent" not in Path(
        f"/proc/{first.pid}/cmdline").read_bytes()
    assert again.uploaded_files == 1  # the edgeloop wheel; the wheelhouse was already there
    assert again.info.runtime("tflite").version == "2.14.0"
    with open_tunnel_client(profile) as client:
        assert client.health().ok

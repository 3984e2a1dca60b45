"""The CLI's long-lived local agent: reused between commands, stopped on demand, replaced
when stale, exits when idle, private to its user; library use still gets a private agent."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.ab_models import edgeloop
from toolkit.errors import AgentError
from toolkit.transport.long_lived import STATE_FILE, TOKEN_FILE, pid_alive, read_state


@pytest.fixture()
def home(tmp_path):
    home = tmp_path / "home"
    yield home
    edgeloop("agent", "stop", home=home, check=False)


def _wait_gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    return False


def test_two_cli_profiles_use_the_same_agent_and_repeat_stores_every_run(model_files, home):
    first = json.loads(edgeloop("profile", str(model_files.tflite), "--min-seconds", "0.1",
                                "--json", home=home).stdout)
    state = read_state(home)
    assert state is not None and pid_alive(state["pid"])
    repeated = json.loads(edgeloop("profile", str(model_files.tflite), "--min-seconds", "0.1",
                                   "--repeat", "3", "--json", home=home).stdout)
    assert read_state(home)["pid"] == state["pid"]  # reused, not restarted
    assert first["ok"] and repeated["runs"] == 3 and len(repeated["measurements"]) == 3
    p50s = [m["latency"]["p50_ms"] for m in repeated["measurements"]]
    assert repeated["p50s_ms"] == p50s
    assert repeated["min_p50_ms"] <= repeated["median_p50_ms"] <= repeated["max_p50_ms"]
    assert repeated["relative_spread"] == pytest.approx(
        (max(p50s) - min(p50s)) / repeated["median_p50_ms"])
    rows = json.loads(edgeloop("results", "--format", "json", home=home).stdout)
    assert len(rows) == 4
    assert {r["run_id"] for r in rows[1:]} == {repeated["run_id"]}


def test_agent_stop_stops_it_and_the_next_command_starts_another(home):
    edgeloop("devices", "info", "local", home=home)
    pid = read_state(home)["pid"]
    done = edgeloop("agent", "stop", home=home)
    assert f"pid {pid}" in done.stdout
    assert _wait_gone(pid, 5) and read_state(home) is None
    assert "no local agent was running" in edgeloop("agent", "stop", home=home).stdout
    edgeloop("devices", "info", "local", home=home)
    assert read_state(home)["pid"] != pid


def test_a_stale_state_file_is_replaced(home):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    home.mkdir(parents=True)
    (home / STATE_FILE).write_text(json.dumps({"pid": dead.pid, "address": "127.0.0.1:9",
                                               "device_id": "gone"}))
    info = json.loads(edgeloop("devices", "info", "local", "--json", home=home).stdout)
    state = read_state(home)
    assert state["pid"] != dead.pid and pid_alive(state["pid"])
    assert state["device_id"] == info["device_id"]
    assert "is not running" in (home / "logs" / "local-agent.log").read_text()


def test_concurrent_first_commands_start_one_agent(home):
    with ThreadPoolExecutor(2) as pool:
        infos = list(pool.map(
            lambda _: json.loads(edgeloop("devices", "info", "local", "--json",
                                          home=home).stdout), range(2)))
    log = (home / "logs" / "local-agent.log").read_text()
    assert log.count("edgeloop-agent listening on") == 1
    assert infos[0]["device_id"] == infos[1]["device_id"]


def test_an_idle_agent_exits_by_itself(home):
    edgeloop("devices", "info", "local", home=home, env={"EDGELOOP_AGENT_IDLE_S": "1"})
    pid = read_state(home)["pid"]
    assert _wait_gone(pid, 30)
    assert "idle for 1 s: exiting" in (home / "logs" / "local-agent.log").read_text()


def test_the_agent_needs_the_token_in_a_private_file(home):
    from toolkit.transport.grpc_client import DeviceClient

    edgeloop("devices", "info", "local", home=home)
    state, token_file = read_state(home), home / TOKEN_FILE
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    with pytest.raises(AgentError, match="token"):
        DeviceClient(state["address"], connect_timeout_s=5)  # GetInfo without the token
    token = token_file.read_text().strip()
    with DeviceClient(state["address"], token=token) as client:
        assert client.info().device_id == state["device_id"]


def test_library_use_keeps_a_private_agent_that_ends_with_the_block(tmp_path, monkeypatch):
    from toolkit.devices.connect import open_device

    monkeypatch.setenv("EDGELOOP_HOME", str(tmp_path / "lib-home"))
    with open_device("local") as client:
        address = client.address
    assert read_state(tmp_path / "lib-home") is None
    from toolkit.transport.grpc_client import DeviceClient

    with pytest.raises(AgentError, match="no agent answered"):
        DeviceClient(address, connect_timeout_s=1)

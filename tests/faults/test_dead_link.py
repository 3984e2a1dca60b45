"""A dead link mid-benchmark: the host notices by keepalive, reattaches to the SAME run when
the link comes back, and fails clearly within the run's budget when it never does.

A real agent in a private network namespace, reached over a veth pair with TLS and a token
(beyond loopback the agent requires both); the link is black-holed with `pfifo limit 0` on both
ends of the veth (this kernel has no netem), which is a link that still looks up but carries
nothing — no reset, no refusal: only keepalive can tell.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time

import pytest

from tests.fixtures_netns import NetnsLab, SpawnedAgent, netns_skip_reason
from tests.fixtures_tls import self_signed_cert
from toolkit.devices.profile import TlsConfig
from toolkit.errors import AgentLostError
from toolkit.measurement import BenchmarkOptions
from toolkit.transport.grpc_client import RUN_MARGIN_S, DeviceClient

TOKEN_ENV = "EDGELOOP_TEST_NETNS_TOKEN"
DETECT_WITHIN_S = 15.0


@pytest.fixture(scope="module")
def netns_agent(tmp_path_factory):
    """(lab, host, client) of one agent in its own namespace; skipped, with the reason, where
    namespaces cannot be made."""
    reason = netns_skip_reason()
    if reason:
        pytest.skip(f"dead-link tests need a private network namespace: {reason}")
    lab, agent, client = NetnsLab(), None, None
    try:
        host = lab.add()
        folder = tmp_path_factory.mktemp("dead-link")
        cert, key = self_signed_cert(folder, [host.address])
        token = secrets.token_hex(16)
        agent = SpawnedAgent(["ip", "netns", "exec", host.netns], host.address,
                             folder / "cache", ("--tls-cert", str(cert), "--tls-key", str(key)),
                             env={"EDGELOOP_AGENT_TOKEN": token})
        with pytest.MonkeyPatch.context() as env:
            env.setenv(TOKEN_ENV, token)
            client = DeviceClient(agent.address, tls=TlsConfig(ca_file=str(cert),
                                                               token_env=TOKEN_ENV),
                                  name="netns-box")
            yield lab, host, client
    finally:
        if client is not None:
            client.close()
        for h in lab.hosts:
            lab.restore(h)
        if agent is not None:
            agent.stop()
        lab.close()


def _bench_in_thread(client, model, options):
    """Starts a benchmark; returns (thread, outcome dict, event set once timed runs began)."""
    timed, outcome = threading.Event(), {}

    def on_progress(p) -> None:
        if p.phase == "timed":
            timed.set()

    def run() -> None:
        outcome["sent"] = time.time()
        try:
            outcome["result"] = client.benchmark(model, options, on_progress)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc
        outcome["ended"] = time.time()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome, timed


def _link_lost_at(caplog, after: float, within: float) -> float:
    """Wall time of the client's "link lost" log record after `after`, polled up to `within`."""
    limit = time.time() + within
    while time.time() < limit:
        for record in caplog.records:
            if "link lost" in record.getMessage() and record.created >= after:
                return record.created
        time.sleep(0.1)
    raise AssertionError(f"the host did not notice the dead link within {within:g} s")


def test_a_black_holed_link_is_noticed_and_the_host_reattaches_to_the_one_run(
        netns_agent, model_files, caplog):
    """Guards: keepalive on the client channel (without it nothing fails while the link is
    black-holed: no packet, no reset), and the reattach with the same job id: the result that
    comes back is the run that started before the cut (started_unix), not a second run."""
    lab, host, client = netns_agent
    caplog.set_level(logging.WARNING, logger="toolkit.transport.grpc_client")
    options = BenchmarkOptions(runtime="onnx", min_runs=10, min_seconds=20.0,
                               timeout_seconds=90.0)
    thread, outcome, timed = _bench_in_thread(client, model_files.onnx, options)
    try:
        assert timed.wait(60), f"the benchmark never reached its timed runs: {outcome}"
        cut = time.time()
        lab.blackhole(host)
        noticed = _link_lost_at(caplog, cut, DETECT_WITHIN_S + 5)
        time.sleep(3)  # the host's reconnect probes meet the dead link for a while
    finally:
        lab.restore(host)
    restored = time.time()
    thread.join(90)
    assert not thread.is_alive(), "no result 90 s after the link came back"
    print(f"dead link noticed after {noticed - cut:.1f} s; result "
          f"{outcome['ended'] - restored:.1f} s after the link came back")
    assert noticed - cut < DETECT_WITHIN_S
    assert "error" not in outcome, outcome.get("error")
    m = outcome["result"]
    assert m.ok, m.error_message
    assert outcome["sent"] - 1 <= m.timestamp < cut, "the run was measured again after the cut"
    assert any("reconnected" in r.getMessage() for r in caplog.records)


def test_a_link_that_never_comes_back_is_a_clear_error_within_the_budget(
        netns_agent, model_files, caplog):
    """Guards: the run's deadline (its timeout plus RUN_MARGIN_S, not timeout*4+60) and the
    bounded reattach wait: the host gives up with AgentLostError naming the device no later
    than 30 s after the benchmark's own timeout."""
    lab, host, client = netns_agent
    caplog.set_level(logging.WARNING, logger="toolkit.transport.grpc_client")
    timeout = 15.0
    options = BenchmarkOptions(runtime="onnx", min_runs=10, min_seconds=10.0,
                               timeout_seconds=timeout)
    thread, outcome, timed = _bench_in_thread(client, model_files.onnx, options)
    try:
        assert timed.wait(60), f"the benchmark never reached its timed runs: {outcome}"
        cut = time.time()
        lab.blackhole(host)
        noticed = _link_lost_at(caplog, cut, DETECT_WITHIN_S + 5)
        thread.join(timeout + RUN_MARGIN_S + 30)
        assert not thread.is_alive(), "the host still waits, long past the run's budget"
    finally:
        lab.restore(host)
    waited = outcome["ended"] - outcome["sent"]
    print(f"dead link noticed after {noticed - cut:.1f} s; host gave up {waited:.1f} s after "
          f"sending (timeout {timeout:g} s): {outcome.get('error')}")
    assert noticed - cut < DETECT_WITHIN_S
    error = outcome.get("error")
    assert isinstance(error, AgentLostError) and isinstance(error, ConnectionError), outcome
    assert "netns-box" in str(error) and "\n" not in str(error)
    assert waited <= timeout + 30

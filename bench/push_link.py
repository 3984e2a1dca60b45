"""Push over a link of a lab's speed: an agent in its own network namespace behind a veth
pair rate-limited to 1 Gbit/s each way (`tc tbf`), as a device on gigabit Ethernet would be.

Beyond loopback the agent requires TLS and a token, so the push pays for both; the raw TCP
copy it is compared with (a receiver in the same namespace that writes and fsyncs the file)
pays for neither. Needs root (namespaces); `skip_reason()` says why it cannot run.
"""

from __future__ import annotations

import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from bench import raw_copy

LINK_RATE = "1 Gbit/s"
TBF = ("tbf", "rate", "1gbit", "burst", "1mb", "latency", "50ms")
TOKEN_ENV = "EDGELOOP_BENCH_LINK_TOKEN"



def skip_reason() -> Optional[str]:
    from tests.fixtures_netns import netns_skip_reason

    reason = netns_skip_reason()
    if reason is None and subprocess.run(["which", "tc"], capture_output=True).returncode:
        reason = "`tc` (iproute2) not installed"
    return reason


def _limit(host) -> None:
    for prefix, dev in (([], host.host_if), (["ip", "netns", "exec", host.netns], host.peer_if)):
        subprocess.run([*prefix, "tc", "qdisc", "add", "dev", dev, "root", *TBF],
                       capture_output=True, check=True)


def push_over_link(path: Path, folder: Path, rounds: int = 3) -> dict:
    """Push MB/s of `path` against a raw TCP copy over the rate-limited link, interleaved
    round by round; the ratio is the median of the rounds'."""
    from tests.fixtures_netns import NetnsLab, SpawnedAgent
    from tests.fixtures_tls import self_signed_cert
    from toolkit.devices.profile import TlsConfig
    from toolkit.transport.grpc_client import DeviceClient
    from toolkit.transport.model_file import file_sha256

    lab, agent, receiver, client = NetnsLab(), None, None, None
    try:
        host = lab.add()
        _limit(host)
        cert, key = self_signed_cert(folder, [host.address])
        token = secrets.token_hex(16)
        agent = SpawnedAgent(["ip", "netns", "exec", host.netns], host.address,
                             folder / "link-cache", ("--tls-cert", str(cert), "--tls-key",
                                                     str(key)),
                             env={"EDGELOOP_AGENT_TOKEN": token})
        receiver = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, sys.executable, raw_copy.__file__, "serve",
             host.address,
             str(folder / "link-copy.bin"), str(path.stat().st_size)],
            stdout=subprocess.PIPE, text=True,
        )
        raw_address = (host.address, int(receiver.stdout.readline()))
        os.environ[TOKEN_ENV] = token
        client = DeviceClient(agent.address, tls=TlsConfig(ca_file=str(cert),
                                                           token_env=TOKEN_ENV), name="link")
        sha = file_sha256(path)
        raws, rates, ratios = [], [], []
        for _ in range(rounds):
            raw = raw_copy.send_file_mb_s(raw_address, path)
            client.delete_model(sha)
            t0 = time.perf_counter()
            client.push(path)
            rate = path.stat().st_size / 2**20 / (time.perf_counter() - t0)
            raws.append(raw)
            rates.append(rate)
            ratios.append(rate / raw)
        return {
            "link": " ".join(TBF),
            # pushes in this process after file_sha256 above: the hash index already holds
            # the digest (bench_core's push rounds measure a fresh process, cold and warm)
            "hash": "warm index",
            "push_mb_s": statistics.median(rates),
            "raw_tcp_mb_s": statistics.median(raws),
            "ratio": statistics.median(ratios),
            "ratio_all": ratios,
            "rounds": rounds,
        }
    finally:
        os.environ.pop(TOKEN_ENV, None)
        if client is not None:
            client.close()
        if receiver is not None:
            receiver.kill()
            receiver.wait()
        if agent is not None:
            agent.stop()
        lab.close()

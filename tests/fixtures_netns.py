"""Device hosts with their own addresses: network namespaces joined to the host by veth pairs.

Only what this module creates is touched: namespaces and veth names carry this process's pid,
addresses come from 10.251.x.0/30, and everything is deleted on close. One link can be
shaped: `tc netem` delay and loss where the kernel has it, else a `tbf` rate limit (slow, not
lossy). Agents inside listen beyond loopback, so they use TLS (a self-signed certificate
naming every namespace address).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

READY_PREFIX = "edgeloop-agent listening on "
NETEM = ("netem", "delay", "40ms", "10ms", "loss", "1%")
TBF = ("tbf", "rate", "2mbit", "burst", "32kbit", "latency", "400ms")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def netns_skip_reason() -> Optional[str]:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) not installed; run deploy/ci-system-deps.sh"
    probe = f"elprobe{os.getpid()}"
    if _ip("netns", "add", probe, check=False).returncode != 0:
        return "`ip netns add` is not permitted here"
    _ip("netns", "del", probe, check=False)
    return None


@dataclass(frozen=True)
class NetnsHost:
    """One namespace: its name, its address, the host-side interface, how its link is shaped."""

    netns: str
    address: str
    host_if: str
    shaping: str = ""
    peer_if: str = ""  # its end of the veth pair, inside the namespace


class NetnsLab:
    """Creates namespaces on demand and removes all of them on close()."""

    def __init__(self) -> None:
        self.hosts: list[NetnsHost] = []
        self._tag = f"{os.getpid() % 100000}"

    def add(self, shape: bool = False) -> NetnsHost:
        i = len(self.hosts)
        ns, host_if, peer = f"el{self._tag}n{i}", f"el{self._tag}h{i}", f"el{self._tag}p{i}"
        base = f"10.251.{(os.getpid() % 60) * 4 + i}"
        _ip("netns", "add", ns)
        host = NetnsHost(ns, f"{base}.2", host_if, peer_if=peer)
        self.hosts.append(host)
        _ip("link", "add", host_if, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", ns)
        _ip("addr", "add", f"{base}.1/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", ns, "addr", "add", f"{base}.2/30", "dev", peer)
        _ip("-n", ns, "link", "set", peer, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        if shape:
            host = NetnsHost(ns, host.address, host_if, self._shape(host_if, ns, peer), peer)
            self.hosts[-1] = host
        return host

    @staticmethod
    def _shape(host_if: str, ns: str, peer: str) -> str:
        """Delay and loss both ways with netem, else a tbf rate limit; returns what was applied."""
        for qdisc in (NETEM, TBF):
            done = subprocess.run(["tc", "qdisc", "add", "dev", host_if, "root", *qdisc],
                                  capture_output=True, text=True)
            if done.returncode == 0:
                subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", peer,
                                "root", *qdisc], capture_output=True, check=True)
                return " ".join(qdisc)
        return ""

    @staticmethod
    def blackhole(host: NetnsHost) -> None:
        """Drops every packet both ways (`pfifo limit 0`: this kernel has no netem loss 100%);
        the link looks alive to both ends, nothing crosses it. Only on an unshaped host."""
        subprocess.run(["tc", "qdisc", "add", "dev", host.host_if, "root", "pfifo", "limit",
                        "0"], capture_output=True, check=True)
        subprocess.run(["ip", "netns", "exec", host.netns, "tc", "qdisc", "add", "dev",
                        host.peer_if, "root", "pfifo", "limit", "0"], capture_output=True,
                       check=True)

    @staticmethod
    def restore(host: NetnsHost) -> None:
        """Undoes blackhole() (deleting the root qdisc; a missing one is fine)."""
        subprocess.run(["tc", "qdisc", "del", "dev", host.host_if, "root"], capture_output=True)
        subprocess.run(["ip", "netns", "exec", host.netns, "tc", "qdisc", "del", "dev",
                        host.peer_if, "root"], capture_output=True)

    def close(self) -> None:
        for host in self.hosts:
            _ip("link", "del", host.host_if, check=False)
            _ip("netns", "del", host.netns, check=False)
        self.hosts.clear()


class SpawnedAgent:
    """`python -m device_agent serve` under a command prefix (e.g. `ip netns exec NS`)."""

    def __init__(self, prefix: list[str], host: str, cache_dir: Path,
                 extra: tuple[str, ...] = (), timeout_s: float = 60.0,
                 env: Optional[dict[str, str]] = None) -> None:
        cmd = [*prefix, sys.executable, "-m", "device_agent", "serve", "--host", host,
               "--port", "0", "--cache-dir", str(cache_dir), *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True,
                                     env={**os.environ, **(env or {})})
        found: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                if line.startswith(READY_PREFIX):
                    found.append(line[len(READY_PREFIX):].strip())
                    break
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(timeout_s) or not found:
            self.stop()
            raise RuntimeError(f"agent did not start: {cmd}")
        self.address = found[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()

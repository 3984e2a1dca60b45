"""The local device: a real agent process on 127.0.0.1, reached like any other device.

Two lifetimes: `local_agent()` starts a private agent that ends with the block (library use,
tests); the `edgeloop` command line instead reuses one long-lived agent per EDGELOOP_HOME
(`toolkit.transport.long_lived`), so a command answers without starting an agent each time.
`local_device()` picks between them; `prefer_long_lived()` is how the CLI asks for the latter.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from toolkit.errors import AgentUnreachableError
from toolkit.paths import edgeloop_home

if TYPE_CHECKING:  # imported when used: the CLI imports this module before any command runs
    from toolkit.transport.grpc_client import DeviceClient

READY_PREFIX = "edgeloop-agent listening on "  # printed by `python -m device_agent serve`
START_TIMEOUT_S = 60.0


class AgentProcess:
    """A spawned `python -m device_agent serve` on a free loopback port."""

    def __init__(
        self, cache_dir: Path, extra_args: tuple[str, ...] = (), env: Optional[dict] = None,
        python: Optional[str] = None,
    ):
        cmd = [
            python or sys.executable,
            "-m",
            "device_agent",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--cache-dir",
            str(cache_dir),
            "--exit-with-parent",
            *extra_args,
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        self.address = self._wait_ready()

    def _wait_ready(self) -> str:
        found: list[str] = []
        done = threading.Event()

        def read() -> None:
            for line in self.proc.stdout:
                if line.startswith(READY_PREFIX):
                    found.append(line[len(READY_PREFIX) :].strip())
                    break
            done.set()

        threading.Thread(target=read, daemon=True).start()
        if not done.wait(START_TIMEOUT_S) or not found:
            if done.is_set():  # its output ended: it is exiting
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            code = self.proc.poll()
            self._end()
            err = self.proc.stderr.read()[-600:].strip() if self.proc.stderr else ""
            self._close_streams()
            why = (f"exited with code {code}" if code is not None
                   else f"did not start within {START_TIMEOUT_S:g} s")
            raise AgentUnreachableError(f"local agent {why}: {err or 'no error output'}")
        return found[0]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self._end()
        self._close_streams()

    def _end(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def _close_streams(self) -> None:
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()


@contextmanager
def local_agent(
    cache_dir: Optional[Path] = None,
    extra_args: tuple[str, ...] = (),
    env: Optional[dict] = None,
    name: str = "local",
    python: Optional[str] = None,
) -> Iterator[DeviceClient]:
    """Starts a real agent on 127.0.0.1 (free port), yields a client to it, stops it after.

    Args:
        cache_dir: the agent's model cache; default `<edgeloop home>/local-agent`, kept
            between runs so a model already pushed is not sent again.
        extra_args: more `serve` arguments (e.g. ("--device-id", "slow-box")).
        env: extra environment for the agent process.
        python: the interpreter that runs the agent (default: this one, `sys.executable`);
            another Python with edgeloop installed, e.g. a device's version in a venv.
    """
    from toolkit.transport.grpc_client import DeviceClient

    cache_dir = Path(cache_dir) if cache_dir else edgeloop_home() / "local-agent"
    agent = AgentProcess(cache_dir, extra_args, env, python)
    try:
        client = DeviceClient(agent.address, name=name)
    except BaseException:
        agent.stop()
        raise
    try:
        yield client
    finally:
        client.close()
        agent.stop()


LOCAL_AGENT_ENV = "EDGELOOP_LOCAL_AGENT"  # "private": the CLI, too, starts one agent per call
_LONG_LIVED = False


@contextmanager
def prefer_long_lived() -> Iterator[None]:
    """Within the block (the CLI's whole run), "local" means the long-lived agent, unless
    `$EDGELOOP_LOCAL_AGENT` is "private". Other threads of the CLI (fleet fan-out) see it too."""
    global _LONG_LIVED
    previous, _LONG_LIVED = _LONG_LIVED, os.environ.get(LOCAL_AGENT_ENV, "") != "private"
    try:
        yield
    finally:
        _LONG_LIVED = previous


@contextmanager
def local_device(name: str = "local") -> Iterator[DeviceClient]:
    """A client to the local device: the long-lived agent under `prefer_long_lived()`,
    otherwise a private agent for the duration of the block."""
    if _LONG_LIVED:
        from toolkit.transport.long_lived import long_lived_agent

        with long_lived_agent(name=name) as client:
            yield client
    else:
        with local_agent(name=name) as client:
            yield client

"""The CLI's long-lived local agent: started on first use, reused by later calls, idle-exits.

Every `edgeloop` command that measures on "local" used to start an agent and stop it at the
end, paying for an interpreter start-up, imports and a runtime probe each time. The CLI now
keeps one agent per `EDGELOOP_HOME`:

- **Started on first use**, detached (its own session, output in `<home>/logs/local-agent.log`),
  listening on 127.0.0.1 on a free port, with a random bearer token in
  `<home>/local-agent.token` (mode 0600) so other local users cannot use it, and
  `--idle-exit-s` so it stops by itself after `EDGELOOP_AGENT_IDLE_S` seconds (default 600)
  with nothing to do.
- **Found again** through `<home>/local-agent.json` (pid, address, device id, agent version,
  token file). A state file is trusted only when its agent answers GetInfo with our token and
  reports the same device id and agent version; otherwise it is stale and replaced. Starting
  and replacing happen under an exclusive lock (`<home>/local-agent.lock`), so two CLI calls
  at once never start two agents.
- **Kept alive while used**: a client holds a lease (a Health call every third of the idle
  period), so a long tune whose host-side work leaves the agent without calls for a while does
  not lose it.
- **Stopped** by `edgeloop agent stop` (`stop()`), or by its idle exit.

Library and test use (`with local_agent() as dev:`) is unchanged: a private agent that ends
with the block. `EDGELOOP_LOCAL_AGENT=private` makes the CLI do the same.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

from toolkit.errors import AgentError, AgentUnreachableError
from toolkit.paths import edgeloop_home

STATE_FILE = "local-agent.json"
LOCK_FILE = "local-agent.lock"
TOKEN_FILE = "local-agent.token"
LOG_FILE = "local-agent.log"  # under <home>/logs
CACHE_DIR = "local-agent"  # the same model cache the private local agent uses
IDLE_ENV = "EDGELOOP_AGENT_IDLE_S"
DEFAULT_IDLE_S = 600.0
READY_PREFIX = "edgeloop-agent listening on "  # printed by `python -m device_agent serve`
START_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 2.0  # a live agent on loopback answers in milliseconds
STOP_TIMEOUT_S = 10.0


def idle_exit_s() -> float:
    """The idle period after which the agent exits: `$EDGELOOP_AGENT_IDLE_S`, default 600 s."""
    raw = os.environ.get(IDLE_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_IDLE_S
    except ValueError:
        raise AgentError(f"${IDLE_ENV}: expected seconds (a number > 0), got {raw!r}") from None
    if value <= 0:
        raise AgentError(f"${IDLE_ENV}: expected seconds (a number > 0), got {raw!r}")
    return value


def _paths(home: Optional[Path]) -> tuple[Path, Path, Path]:
    home = Path(home) if home else edgeloop_home()
    return home / STATE_FILE, home / LOCK_FILE, home / TOKEN_FILE


@contextlib.contextmanager
def _locked(home: Optional[Path]) -> Iterator[None]:
    _, lock_path, _ = _paths(home)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def read_state(home: Optional[Path] = None) -> Optional[dict[str, Any]]:
    """The state file's content, or None when there is none (or it is unreadable)."""
    state_path, _, _ = _paths(home)
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and isinstance(state.get("pid"), int) else None


def _write_state(home: Optional[Path], state: dict[str, Any]) -> None:
    state_path, _, _ = _paths(home)
    tmp = state_path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(state, f, indent=2)
    os.replace(tmp, state_path)


def _remove_state(home: Optional[Path]) -> None:
    state_path, _, _ = _paths(home)
    with contextlib.suppress(FileNotFoundError):
        state_path.unlink()


def pid_alive(pid: int) -> bool:
    """Whether `pid` is a running process (a zombie is not; our own exited child is reaped)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive, and not ours
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc: trust kill(0)


def _is_our_agent_process(pid: int, token_file: Path) -> bool:
    """The process's command line is an agent serving with our token file (Linux /proc)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"device_agent" in args and os.fsencode(str(token_file)) in args


def _connect(state: dict[str, Any], token_file: Path, name: str) -> tuple[Any, str]:
    """(client, "") to the agent the state file names, if it is alive, answers with our token
    and is the agent that was recorded (device id, agent version); else (None, why not)."""
    from device_agent import __version__ as agent_version
    from toolkit.transport.grpc_client import DeviceClient

    if not pid_alive(state["pid"]):
        return None, f"pid {state['pid']} is not running"
    try:
        token = token_file.read_text(encoding="utf-8").strip()
        client = DeviceClient(str(state.get("address", "")), connect_timeout_s=CONNECT_TIMEOUT_S,
                              name=name, token=token)
        info = client.info()
    except (OSError, AgentError) as exc:
        return None, f"pid {state['pid']} did not answer with our token: {exc}"
    if info.device_id != state.get("device_id") or info.agent_version != agent_version:
        client.close()
        return None, (f"pid {state['pid']} is agent {info.agent_version} of device "
                      f"{info.device_id}, not {agent_version} of {state.get('device_id')}")
    return client, ""


def _terminate(pid: int, token_file: Path) -> bool:
    """SIGTERM to our agent (never to a process that is not ours), waiting for it to go."""
    if not pid_alive(pid) or not _is_our_agent_process(pid, token_file):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while pid_alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)  # its own session: the children go with it
            break
        time.sleep(0.02)
    return True


def _write_token(token_file: Path) -> str:
    token = secrets.token_urlsafe(32)
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode on open: make sure
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    return token


def _start(home: Path, token_file: Path, name: str, replacing: str = ""):  # -> DeviceClient
    """Starts a detached agent and records it; returns a client to it. `replacing`: why the
    agent in the state file was not reused (written to the log)."""
    from toolkit.transport.grpc_client import DeviceClient

    token = _write_token(token_file)
    log_path = home / "logs" / LOG_FILE
    log_path.parent.mkdir(parents=True, exist_ok=True)
    idle = idle_exit_s()
    cmd = [sys.executable, "-m", "device_agent", "serve", "--host", "127.0.0.1", "--port", "0",
           "--cache-dir", str(home / CACHE_DIR), "--token-file", str(token_file),
           "--idle-exit-s", f"{idle:g}"]
    with log_path.open("ab") as log:
        if replacing:
            log.write(f"edgeloop: replacing the recorded local agent: {replacing}\n".encode())
        offset = log.tell()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
    address = _wait_ready(proc, log_path, offset)
    try:
        client = DeviceClient(address, name=name, token=token)
    except BaseException:
        _terminate(proc.pid, token_file)
        raise
    _write_state(home, {
        "pid": proc.pid, "address": address, "device_id": client.info().device_id,
        "agent_version": client.info().agent_version, "token_file": str(token_file),
        "cache_dir": str(home / CACHE_DIR), "idle_exit_s": idle, "started_unix": time.time(),
        "python": sys.executable,
    })
    return client


def _wait_ready(proc: subprocess.Popen, log_path: Path, offset: int) -> str:
    """Reads the agent's log from `offset` until its ready line (the agent's readiness, not a
    fixed sleep); raises with the log's tail when it exits or takes too long."""
    deadline = time.monotonic() + START_TIMEOUT_S
    with log_path.open("rb") as log:
        log.seek(offset)
        text = b""
        while True:
            text += log.read()
            for line in text.decode("utf-8", "replace").splitlines():
                if line.startswith(READY_PREFIX):
                    return line[len(READY_PREFIX):].strip()
            if proc.poll() is not None or time.monotonic() > deadline:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                tail = text.decode("utf-8", "replace").strip()[-600:]
                raise AgentUnreachableError(
                    f"local agent did not start within {START_TIMEOUT_S:g} s "
                    f"(log {log_path}): {tail}")
            time.sleep(0.01)


def connect(name: str = "local", home: Optional[Path] = None):  # -> DeviceClient
    """A client to this home's long-lived agent, started (or replaced, when stale) if needed.

    Args:
        name: how the device is called in messages.
        home: the edgeloop home (default `EDGELOOP_HOME` / the per-user folder).
    """
    home = Path(home) if home else edgeloop_home()
    _, _, token_file = _paths(home)
    state = read_state(home)
    if state is not None:
        client, _ = _connect(state, token_file, name)
        if client is not None:
            return client
    with _locked(home):
        state, why = read_state(home), ""  # another call may have started one meanwhile
        if state is not None:
            client, why = _connect(state, token_file, name)
            if client is not None:
                return client
            _terminate(state["pid"], token_file)  # stale: an older version, or not answering
            _remove_state(home)
        return _start(home, token_file, name, replacing=why)


def stop(home: Optional[Path] = None) -> Optional[int]:
    """Stops this home's long-lived agent; returns its pid, or None when none was running."""
    home = Path(home) if home else edgeloop_home()
    _, _, token_file = _paths(home)
    with _locked(home):
        state = read_state(home)
        if state is None:
            return None
        stopped = _terminate(state["pid"], token_file)
        _remove_state(home)
        return state["pid"] if stopped else None


class _Lease:
    """Keeps the agent from idle-exiting while a client is open: a Health call every third of
    the idle period."""

    def __init__(self, client: Any, period_s: float) -> None:
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(client, period_s),
                                        name="agent-lease", daemon=True)
        self._thread.start()

    def _run(self, client: Any, period_s: float) -> None:
        while not self._done.wait(period_s):
            with contextlib.suppress(Exception):
                client.health()

    def close(self) -> None:
        self._done.set()


@contextlib.contextmanager
def long_lived_agent(name: str = "local", home: Optional[Path] = None) -> Iterator[Any]:
    """Yields a client to the long-lived agent; the agent keeps running after the block."""
    client = connect(name, home)
    state = read_state(home) or {}
    lease = _Lease(client, float(state.get("idle_exit_s") or idle_exit_s()) / 3)
    try:
        yield client
    finally:
        lease.close()
        client.close()

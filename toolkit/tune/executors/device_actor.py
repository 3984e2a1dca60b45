"""One Ray actor per device: it holds the device's client and runs one job at a time.

Every tuning driver on the cluster that names the same device (same agent id, same address)
gets the same actor (a named, detached actor in the `edgeloop` namespace), and an actor runs
its calls one after another, so benchmarks from many workers and many runs never overlap on a
device. The driver talks to it through `RayDeviceClient`, which offers the few client calls
the tuner makes (benchmark, push, infer, info). Artifacts travel as bytes with their sha256,
checked on arrival. An actor with nothing to do for `IDLE_EXIT_S` exits (its name is freed);
a driver that holds an actor keeps it (`RayDeviceClient` touches it every `LEASE_S`).

Credentials travel as data: the driver hands the actor the `AgentCredentials` its own client
presented (the long-lived local agent's token from its 0600 file, a profile's token and TLS
material), so the actor reads none of the driver's files or environment. An actor that cannot
open its device keeps the error and raises it from every call, so the driver shows the agent's
own words (and then ends the actor), not only that the actor is gone.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from toolkit.devices.profile import DeviceProfile
from toolkit.errors import AgentError, AgentUnreachableError
from toolkit.measurement import BenchmarkOptions, Measurement
from toolkit.transport.credentials import AgentCredentials

NAMESPACE = "edgeloop"
IDLE_EXIT_S = 600.0
LEASE_S = 60.0  # a driver's touch, so an actor it holds never idle-exits between its calls


def actor_name(device_id: str, address: str) -> str:
    """The cluster-wide name of a device's actor: its agent id and where it is reached."""
    return f"edgeloop-device:{device_id}@{address}"


class DeviceActor:
    """Lives on a Ray worker; holds one open client (`open_device(profile, credentials)`).

    Args:
        profile: How to reach the device from the actor's node.
        credentials: What to present to its agent, resolved on the driver; None for a device
            reached otherwise (an SSH one-shot profile).
    """

    def __init__(
        self, profile: DeviceProfile, credentials: Optional[AgentCredentials] = None
    ) -> None:
        from toolkit.devices.connect import open_device

        self._stack = ExitStack()
        self._busy, self._last = 0, time.monotonic()
        self.failure: Optional[Exception] = None
        try:
            self.client = self._stack.enter_context(open_device(profile, credentials))
            self.facts = self.client.info()
        except Exception as exc:  # kept: every call raises it (see `info`)
            self._stack.close()
            self.failure = exc
        self._folder = Path(tempfile.mkdtemp(prefix="edgeloop-actor-"))
        threading.Thread(target=self._exit_when_idle, daemon=True).start()

    def info(self) -> Any:
        """The device's `DeviceInfo`; raises the error that kept the actor from opening it."""
        self._check()
        return self.facts

    def touch(self) -> None:
        """A driver's lease: counts as work for the idle exit."""
        self._last = time.monotonic()

    def benchmark(
        self, sha256: str, name: str, blob: bytes, options: BenchmarkOptions
    ) -> Measurement:
        with self._job():
            return self.client.benchmark(self._model(sha256, name, blob), options, name=name)

    def push(self, sha256: str, name: str, blob: bytes) -> str:
        with self._job():
            model = self._model(sha256, name, blob)
            return model if isinstance(model, str) else self.client.push(model)

    def infer(
        self, model: str, inputs: Sequence[np.ndarray], runtime: str = "", threads: int = 0
    ) -> list[np.ndarray]:
        with self._job():
            return self.client.infer(model, inputs, runtime=runtime, threads=threads)

    def _model(self, sha256: str, name: str, blob: bytes) -> Union[str, Path]:
        """The sha when the device holds it, else the bytes written to a file (checked)."""
        if self.client.has_model(sha256):
            return sha256
        got = hashlib.sha256(blob).hexdigest()
        if got != sha256:
            raise AgentError(
                f"{name}: bytes arrived with sha256 {got[:12]}, expected {sha256[:12]}"
            )
        path = self._folder / sha256 / Path(name).name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(blob)
        return path

    def _job(self) -> _Busy:
        self._check()
        return _Busy(self)

    def _check(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _exit_when_idle(self) -> None:
        while True:
            time.sleep(min(30.0, IDLE_EXIT_S))
            if not self._busy and time.monotonic() - self._last > IDLE_EXIT_S:
                self._stack.close()
                os._exit(0)  # a detached actor's way out; Ray frees its name


class _Busy:
    def __init__(self, actor: DeviceActor) -> None:
        self.actor = actor

    def __enter__(self) -> None:
        self.actor._busy += 1

    def __exit__(self, *exc: object) -> None:
        self.actor._busy -= 1
        self.actor._last = time.monotonic()


class RayDeviceClient:
    """The driver's side of a device actor: the client calls the tuner makes.

    Args:
        actor: The device's actor handle.
        name: The device's label.
        address: Where the device is reached.
        facts: Its `DeviceInfo` (read once).
    """

    def __init__(self, actor: Any, name: str, address: str, facts: Any) -> None:
        self.actor, self.name, self.address, self._facts = actor, name, address, facts
        self._released = threading.Event()
        threading.Thread(target=self._lease, name=f"actor-lease-{name}", daemon=True).start()

    def info(self, refresh: bool = False) -> Any:
        if refresh:
            self._facts = self._get(self.actor.info.remote())
        return self._facts

    def benchmark(
        self,
        model: Union[str, Path],
        options: Optional[BenchmarkOptions] = None,
        on_progress: Any = None,
        name: str = "",
    ) -> Measurement:
        blob = Path(model).read_bytes()
        sha = hashlib.sha256(blob).hexdigest()
        options = options or BenchmarkOptions()
        return self._get(self.actor.benchmark.remote(sha, name or Path(model).name, blob, options))

    def push(self, path: Union[str, Path], name: Optional[str] = None) -> str:
        blob = Path(path).read_bytes()
        return self._get(
            self.actor.push.remote(hashlib.sha256(blob).hexdigest(), name or Path(path).name, blob)
        )

    def infer(
        self,
        model: str,
        inputs: Sequence[np.ndarray],
        runtime: str = "",
        threads: int = 0,
        raw: bool = False,
    ) -> list[np.ndarray]:
        return self._get(self.actor.infer.remote(str(model), list(inputs), runtime, threads))

    def close(self) -> None:
        """Ends this driver's lease; the actor stays for other runs and exits when idle."""
        self._released.set()

    def _lease(self) -> None:
        while not self._released.wait(LEASE_S):
            self.actor.touch.remote()  # fire and forget: a dead actor shows at the next call

    def _get(self, ref: Any) -> Any:
        import ray

        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise AgentError(f"device {self.name}: {_last_line(exc)}") from None
        except ray.exceptions.RayActorError as exc:
            raise AgentUnreachableError(
                f"device {self.name} ({self.address}): its Ray actor is gone: {_last_line(exc)}"
            ) from None


def _last_line(exc: Exception) -> str:
    """The line of a Ray error that says why: the exception line that ends a task's traceback
    (an actor whose `__init__` raised, e.g. edgeloop missing on its node), or the worker's
    exit reason after the actor's details (a killed or crashed worker)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1][:500] if lines else type(exc).__name__

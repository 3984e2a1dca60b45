"""One Ray actor per device: it holds the device's client and runs one job at a time.

Every tuning driver on the cluster that names the same device (same agent id, same address)
gets the same actor (a named, detached actor in the `edgeloop` namespace), and an actor runs
its calls one after another, so benchmarks from many workers and many runs never overlap on a
device. The driver talks to it through `RayDeviceClient`, which offers the few client calls
the tuner makes (benchmark, push, infer, info). Artifacts travel as bytes with their sha256,
checked on arrival. An actor with nothing to do for `IDLE_EXIT_S` exits (its name is freed).
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

NAMESPACE = "edgeloop"
IDLE_EXIT_S = 600.0


def actor_name(device_id: str, address: str) -> str:
    """The cluster-wide name of a device's actor: its agent id and where it is reached."""
    return f"edgeloop-device:{device_id}@{address}"


class DeviceActor:
    """Lives on a Ray worker; holds one open client (`open_device(profile)`).

    Args:
        profile: How to reach the device from the actor's node.
    """

    def __init__(self, profile: DeviceProfile) -> None:
        from toolkit.devices.connect import open_device

        self._stack = ExitStack()
        self.client = self._stack.enter_context(open_device(profile))
        self.facts = self.client.info()
        self._folder = Path(tempfile.mkdtemp(prefix="edgeloop-actor-"))
        self._busy, self._last = 0, time.monotonic()
        threading.Thread(target=self._exit_when_idle, daemon=True).start()

    def info(self) -> Any:
        return self.facts

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
        return _Busy(self)

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
        return None  # the actor stays for other runs; it exits when idle

    def _get(self, ref: Any) -> Any:
        import ray

        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise AgentError(f"device {self.name}: {str(exc).splitlines()[0]}") from None
        except ray.exceptions.RayActorError as exc:
            raise AgentUnreachableError(
                f"device {self.name} ({self.address}): its Ray actor is gone "
                f"({str(exc).splitlines()[0][:200]})"
            ) from None

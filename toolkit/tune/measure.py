"""Measuring one artifact on every device: in parallel across devices, one at a time on each.

Before asking a device, the cache is consulted by (artifact sha256, device id, options): the
run's own database first, then the results store (earlier runs). A new measurement goes to the
results store (with the run id) and the run's database the moment it arrives. A device that
reports a failure (crash, timeout, load error) gives a failed measurement, recorded and ranked
like any other; a device that cannot be reached ends the run (it can be resumed).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from toolkit.devices.precedence import resolve_options
from toolkit.devices.profile import DeviceProfile
from toolkit.errors import ConfigError
from toolkit.measurement import BenchmarkOptions, Measurement
from toolkit.results.store import ResultsStore
from toolkit.search.base import DeviceFigures
from toolkit.tune.trialdb import TrialDB


@dataclass
class Device:
    """One opened device.

    Attributes:
        label: how results name it (profile name, address, or "local").
        profile: its profile (budgets, threads, power sensor).
        client: the connected client.
        device_id: the id its agent reports (the cache key).
        lock: held while the device measures or infers: one job at a time per device.
    """

    label: str
    profile: DeviceProfile
    client: Any
    device_id: str
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def open_devices(specs: Sequence[str]) -> Iterator[list[Device]]:
    """Opens every device (starting a local agent for "local"); closes them all after."""
    from toolkit.devices.connect import open_device, resolve_profile

    with ExitStack() as stack:
        devices = []
        for spec in specs:
            profile = resolve_profile(spec)
            client = stack.enter_context(open_device(profile))
            devices.append(Device(profile.name, profile, client, client.info().device_id))
        check_distinct_ids(devices)
        yield devices


def check_distinct_ids(devices: Sequence[Device]) -> None:
    """ConfigError when two devices report one device id: their measurements would mix."""
    ids = [d.device_id for d in devices]
    if len(set(ids)) != len(ids):
        raise ConfigError(
            f"--device: two devices report the same device id ({ids}); start agents with "
            "distinct --device-id so their measurements are kept apart"
        )


@dataclass
class Outcome:
    """The measurements of one artifact on every device, and what was new."""

    measurements: dict[str, Measurement]  # by device label
    new: int  # measurements actually taken now (cache misses)
    accuracy: Optional[float] = None  # from the accuracy job, when one was given


class Measurer:
    """Measures artifacts on a fixed set of devices with one benchmark configuration.

    Args:
        devices: the opened devices.
        db: the run's database.
        store: the results store.
        run_id: stored with every new measurement.
        bench: benchmark options; threads and power sensor are set per candidate/profile.
        reuse_store: look in the results store for earlier runs' measurements (default True).
    """

    def __init__(self, devices: Sequence[Device], db: TrialDB, store: ResultsStore, run_id: str,
                 bench: BenchmarkOptions, reuse_store: bool = True) -> None:
        self.devices = list(devices)
        self.db = db
        self.store = store
        self.run_id = run_id
        self.bench = bench
        self.reuse_store = reuse_store
        self.taken = 0  # new measurements in this process
        self._pool = ThreadPoolExecutor(max_workers=len(self.devices), thread_name_prefix="measure")

    def options(self, device: Device, threads: int) -> BenchmarkOptions:
        """The options used on `device` for a candidate asking for `threads` (0: default):
        the run's options with the candidate's threads, over the device profile's."""
        return resolve_options(replace(self.bench, threads=threads), device.profile)

    def measure(
        self,
        artifact: Path,
        sha256: str,
        threads: int,
        extra: dict[str, Any],
        accuracy_job: Optional[Callable[[Device], float]] = None,
    ) -> Outcome:
        """Measures on all devices at once; `accuracy_job` runs on the first device after its
        benchmark, under the same lock (never beside a benchmark on that device)."""
        futures = {
            d.label: self._pool.submit(
                self._on_device, d, artifact, sha256, threads, extra,
                accuracy_job if i == 0 else None,
            )
            for i, d in enumerate(self.devices)
        }
        results = {label: f.result() for label, f in futures.items()}
        return Outcome(
            {label: r[0] for label, r in results.items()},
            sum(r[1] for r in results.values()),
            results[self.devices[0].label][2],
        )

    def _on_device(self, device: Device, artifact: Path, sha256: str, threads: int,
                   extra: dict[str, Any], accuracy_job: Optional[Callable[[Device], float]]
                   ) -> tuple[Measurement, int, Optional[float]]:
        options = self.options(device, threads)
        key = options.key()
        with device.lock:
            new = 0
            found = self.db.measurement(device.device_id, sha256, key)
            if found is None and self.reuse_store:
                found = self.store.find(sha256, device.device_id, options)
                if found is not None:
                    self.db.put_measurement(device.device_id, key, found)
            if found is None:
                found = device.client.benchmark(artifact, options, name=Path(artifact).name)
                self.store.append(found, run_id=self.run_id,
                                  extra={**extra, "device_label": device.label})
                if found.ok:
                    self.db.put_measurement(device.device_id, key, found)
                new = 1
                self.taken += 1
            accuracy = accuracy_job(device) if accuracy_job is not None else None
        return found, new, accuracy

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def figures_from(label: str, m: Measurement) -> DeviceFigures:
    """The figures a budget is checked against, from one measurement (absent stays None)."""
    if not m.ok or m.latency is None:
        return DeviceFigures(label, error=f"{m.error_kind}: {m.error_message}".strip(": "))
    memory = m.memory
    return DeviceFigures(
        device=label,
        latency_p90_ms=m.latency.p90_ms,
        latency_p50_ms=m.latency.p50_ms,
        memory_mb=memory.peak_rss_mb if memory else None,
        energy_mj=m.power.energy_per_inference_mj if m.power else None,
        size_kb=memory.model_size_bytes / 1024.0 if memory else None,
    )

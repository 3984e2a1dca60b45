"""Profile one model file on one device: push, benchmark, store (behind `edgeloop profile`)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

from device_agent.protocol import edgeloop_pb2 as pb
from toolkit.devices.connect import open_device, resolve_profile
from toolkit.devices.precedence import resolve_options
from toolkit.devices.profile import DeviceProfile
from toolkit.measurement import BenchmarkOptions, Measurement
from toolkit.transport.model_file import model_format

if TYPE_CHECKING:
    from toolkit.results.store import ResultsStore


def profile_model(
    model_path: Union[str, Path],
    device: Union[str, DeviceProfile] = "local",
    options: Optional[BenchmarkOptions] = None,
    store: Union[bool, ResultsStore] = True,
    on_progress: Optional[Callable[[pb.Progress], None]] = None,
    run_id: Optional[str] = None,
    inputs: Union[str, Path, None] = None,
) -> Measurement:
    """Measures a .tflite/.onnx/.pt2 file on a device and appends the result to the store.

    Args:
        model_path: the model file.
        device: "local" (a real agent spawned on 127.0.0.1), "host:port", a profile name or path.
        options: benchmark options as asked; the device profile's fill the fields they leave
            unset (`toolkit.devices.precedence.resolve_options`).
        store: True for the default store, a ResultsStore, or False to keep nothing.
        on_progress: receives progress events while the device measures.
        run_id: groups rows in the store (e.g. one tuning run).
        inputs: an `.npz` of real input samples, pushed like a model; the timed loop cycles
            through them (`device_agent.measure.real_inputs`) and the row records its sha256.

    Returns:
        The measurement; `ok` False when the device reported a failure (also stored).
    """
    path = Path(model_path)
    model_format(path)  # clear error before anything is started
    profile = resolve_profile(device)
    options = resolve_options(options, profile)
    opening = _open_default_store() if store is True else None
    with open_device(profile) as client:
        if inputs is not None:
            from dataclasses import replace

            options = replace(options, inputs_sha256=client.push(Path(inputs)))
        measurement = client.benchmark(path, options, on_progress=on_progress, name=path.name)
    target = opening.result() if opening is not None else store
    if target:
        target.append(measurement, run_id=run_id, extra={"device_profile": profile.name})
    return measurement


def _open_default_store() -> Future[ResultsStore]:
    """Opens the default store in a thread while the device measures: importing SQLAlchemy
    and checking the schema (~0.15 s) then hide behind the wait for the device."""

    def opened() -> ResultsStore:
        from toolkit.results.store import ResultsStore

        return ResultsStore()

    pool = ThreadPoolExecutor(1, thread_name_prefix="open-store")
    try:
        return pool.submit(opened)
    finally:
        pool.shutdown(wait=False)  # the thread ends when the store is open

"""The gate's steps on one device; each returns an Outcome and may raise (a failed check)."""

from __future__ import annotations

import contextlib
from typing import Any

from toolkit.devices.connect import open_device
from toolkit.devices.profile import DeviceProfile
from toolkit.errors import AgentError
from toolkit.measurement import BenchmarkOptions
from toolkit.validate.checks import Outcome
from toolkit.validate.parity import compare


def connect(stack: contextlib.ExitStack, profile: DeviceProfile) -> Outcome:
    """Opens the device (tunnel, local agent or one-shot SSH) and reads its info."""
    client = stack.enter_context(open_device(profile))
    info = client.info()
    return Outcome(True, f"{info.hostname} ({info.arch}), agent {info.agent_version}, "
                         f"protocol v{info.protocol_version}", value=client)


def push(client: Any, prep: Any) -> Outcome:
    """Pushes the artifact (nothing is sent when the device holds its sha256)."""
    sha = client.push(prep.artifact)
    if sha != prep.sha256:
        raise AgentError(f"pushed sha {sha[:12]} differs from the artifact's {prep.sha256[:12]}")
    return Outcome(True, f"{prep.artifact.name} sha256 {sha[:12]} ({prep.size_bytes} bytes) "
                         "held by the device", value=sha)


def benchmark(client: Any, prep: Any, options: BenchmarkOptions, store: bool) -> Outcome:
    """Benchmarks the artifact; a failure on the device is a failed check with its kind."""
    m = client.benchmark(prep.sha256, options, name=prep.artifact.name)
    if store:
        from toolkit.results.store import ResultsStore

        ResultsStore().append(m, run_id=prep.run_id, extra={"source": "validate"})
    if not m.ok:
        return Outcome(False, f"{m.error_kind}: {m.error_message}", value=m, keep_value=True)
    lat = m.latency
    return Outcome(True, f"{m.runtime} {m.runtime_version}: p50 {lat.p50_ms:.4g} ms, "
                         f"p90 {lat.p90_ms:.4g} ms over {lat.n} runs", value=m)


def parity(client: Any, prep: Any) -> Outcome:
    """Runs the reference inputs on the device and compares with the reference outputs."""
    outputs = client.infer(prep.sha256, [prep.reference.inputs])
    result = compare(outputs[0], prep.reference.outputs, prep.precision)
    return Outcome(result.passed, result.message, result.measured, result.limit, result.unit)


def accuracy(client: Any, prep: Any) -> Outcome:
    """On-device accuracy over the dataset's test split against the floor."""
    from toolkit.evaluate import evaluate_on_device

    result = evaluate_on_device(prep.artifact, prep.dataset, client)
    floor = prep.accuracy_floor_pct
    ok = result.accuracy_pct >= floor
    return Outcome(ok, f"accuracy {result.accuracy_pct:.2f}% {'>=' if ok else '<'} floor "
                       f"{floor:.2f}% ({prep.accuracy_basis}) over {result.n} samples",
                   result.accuracy_pct, floor, "%")

"""The gate's steps on one device; each returns an Outcome and may raise (a failed check)."""

from __future__ import annotations

import contextlib
from typing import Any, Optional

from toolkit.devices.connect import open_device
from toolkit.devices.profile import DeviceProfile
from toolkit.errors import AgentError
from toolkit.measurement import BenchmarkOptions
from toolkit.validate.checks import Outcome
from toolkit.validate.metrics import MetricGate
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


class DatasetOutputs:
    """The device's outputs over the data's test split, computed once for all metric checks
    (a failure is kept and raised again, so each check fails with the same reason)."""

    def __init__(self, client: Any, prep: Any) -> None:
        self.client, self.prep = client, prep
        self._outputs: Any = None
        self._error: Optional[Exception] = None

    def get(self) -> Any:
        """The outputs as a metric receives them (an array, or a tuple for several)."""
        if self._error is not None:
            raise self._error
        if self._outputs is None:
            from toolkit.evaluate import as_metric_outputs, infer_dataset

            try:
                _, outs = infer_dataset(self.prep.artifact, self.prep.dataset, self.client)
            except Exception as exc:  # noqa: BLE001 - each metric check reports it
                self._error = exc
                raise
            self._outputs = as_metric_outputs(outs)
        return self._outputs


def metric(outputs: DatasetOutputs, gate: MetricGate) -> Outcome:
    """One metric of the device's outputs against its bound (`--min-metric` / `--max-metric`)."""
    targets = outputs.prep.dataset.test_y.numpy()
    return gate.outcome(gate.metric.compute(outputs.get(), targets), len(targets))

"""The pre-rollout gate: one artifact on every device of a fleet, concurrently.

Per device: connect, push, benchmark, the profile's budgets, output parity against a
reference, and on-device accuracy when data is given. A device that is unreachable or errors
fails its checks with the reason; no check is ever skipped, so every device reports the same
list of checks.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from toolkit.devices.fleet import Fleet
from toolkit.devices.parallel import DEFAULT_MAX_PARALLEL, Done, Tally, run_bounded
from toolkit.devices.precedence import resolve_options
from toolkit.devices.profile import DeviceProfile
from toolkit.errors import ConfigError, ModelFileError
from toolkit.measurement import BenchmarkOptions, Measurement
from toolkit.stats.ab import MIN_ROUNDS
from toolkit.validate import metrics, regression, steps
from toolkit.validate.checks import Outcome, budget_outcome, not_run
from toolkit.validate.metrics import MetricBound
from toolkit.validate.parity import PRECISIONS
from toolkit.validate.prepare import Prepared, prepare
from toolkit.validate.result import CheckResult, DeviceReport, GateReport


@dataclass(frozen=True)
class GateConfig:
    """What the gate checks besides the budgets in each device's profile.

    Attributes:
        reference_model: torch model spec (toolkit.models) whose outputs the artifact must match.
        reference_outputs: .npz with `inputs` and `outputs` arrays, instead of a model.
        data: Dataset spec (toolkit.data); enables the on-device accuracy check.
        min_accuracy_pct: Accuracy floor (%). Default: the reference model's host accuracy on
            the same data minus `max_accuracy_drop_pct`.
        max_accuracy_drop_pct: Allowed drop below the reference model's accuracy (default 1.0).
        precision: Parity tolerance: "auto" (from the artifact's tensors), "fp32", "fp16", "int8".
        options: Benchmark options; each device's profile fills the fields they leave unset
            (`toolkit.devices.precedence.resolve_options`).
        max_workers: Devices validated at once (default 0: `DEFAULT_MAX_PARALLEL`, 32).
        device_timeout_s: A device whose checks have not finished within this fails every
            check, named as timed out, while the others go on (default 0: no limit beyond
            each call's own deadline).
        store: Write each measurement to the results store as it arrives (default True).
        baseline: The deployed model; enables the `regression` check on every device.
        max_regression_pct: The regression check fails a candidate slower than the baseline
            by more than this, with confidence (95% interval of the p50 ratio above
            1 + this/100). Default 5.
        baseline_rounds: Interleaved rounds of baseline and candidate per device (default 6).
        metrics: Metric checks (`validate.metrics.MetricBound`: `--min-metric NAME=VALUE`,
            `--max-metric NAME=VALUE`, `--metric NAME`), each `metric.<name>` on every device
            over `data`'s test split; they need `data`.
        metric_direction: `higher` / `lower` for a user's `module:function` metric (default:
            implied by --min-metric / --max-metric).
    """

    reference_model: Optional[str] = None
    reference_outputs: Optional[Path] = None
    data: Optional[str] = None
    min_accuracy_pct: Optional[float] = None
    max_accuracy_drop_pct: float = 1.0
    precision: str = "auto"
    options: BenchmarkOptions = field(default_factory=BenchmarkOptions)
    max_workers: int = 0
    device_timeout_s: float = 0.0
    store: bool = True
    baseline: Optional[Path] = None
    max_regression_pct: float = 5.0
    baseline_rounds: int = 6
    metrics: tuple[MetricBound, ...] = ()
    metric_direction: Optional[str] = None

    def __post_init__(self) -> None:
        if not (0 <= self.max_regression_pct < 1000):  # NaN fails too
            raise ConfigError("validate: --max-regression: expected a percentage from 0 to "
                              f"1000, got {self.max_regression_pct!r}")
        if self.baseline_rounds < MIN_ROUNDS:
            raise ConfigError(f"validate: --baseline-rounds: at least {MIN_ROUNDS}, "
                              f"got {self.baseline_rounds}")
        if self.reference_model and self.reference_outputs:
            raise ConfigError("validate: give --reference-model or --reference, not both")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"validate: precision: expected one of {PRECISIONS}, "
                              f"got {self.precision!r}")
        if self.metrics and not self.data:
            raise ConfigError(f"validate: {self.metrics[0].option} {self.metrics[0].spec} "
                              "needs --data (the samples and targets it is measured on)")
        if (self.data and self.min_accuracy_pct is None and not self.reference_model
                and not self.metrics):
            raise ConfigError("validate: --data needs --min-accuracy, --min-metric, "
                              "--max-metric, --metric or --reference-model (the accuracy "
                              "floor comes from --min-accuracy or the reference model)")


class _DeviceRun:
    """Records checks in plan order; a step that raises is a failed check with the reason."""

    def __init__(self, device: str, plan: list[str]) -> None:
        self.device, self.plan = device, plan
        self.results: dict[str, CheckResult] = {}

    def step(self, name: str, fn: Callable[[], Outcome]) -> Any:
        started = time.perf_counter()
        try:
            outcome = fn()
        except Exception as exc:  # noqa: BLE001 - a device failure is a failed check
            outcome = Outcome(False, f"{type(exc).__name__}: {exc}")
        self.results[name] = CheckResult(
            self.device, name, outcome.passed, outcome.message, outcome.measured, outcome.limit,
            outcome.unit, time.perf_counter() - started, outcome.detail)
        return outcome.value if outcome.passed or outcome.keep_value else None

    def fail_rest(self, reason: str) -> None:
        for name in self.plan:
            if name not in self.results:
                self.results[name] = CheckResult(self.device, name, False, not_run(reason))

    def checks(self) -> tuple[CheckResult, ...]:
        self.fail_rest("the gate stopped early")
        return tuple(self.results[name] for name in self.plan)


def plan_checks(profile: DeviceProfile, prep: Prepared) -> list[str]:
    """The checks every device reports, in order."""
    plan = ["connect", "push", "benchmark"] + [f"budget.{k}" for k, _ in profile.budgets.items()]
    plan += [regression.CHECK] if prep.baseline else []
    plan += ["parity"] if prep.reference else []
    plan += ["accuracy"] if prep.accuracy_floor_pct is not None else []
    return plan + [g.check for g in prep.metric_gates]


def validate_device(profile: DeviceProfile, prep: Prepared, config: GateConfig) -> DeviceReport:
    """Runs every check on one device; never raises for a device-side problem."""
    run, started = _DeviceRun(profile.name, plan_checks(profile, prep)), time.perf_counter()
    address, hostname, measurement = profile.address or "", "", None
    try:
        with contextlib.ExitStack() as stack:
            client = run.step("connect", lambda: steps.connect(stack, profile))
            if client is None:
                run.fail_rest("connect failed")
            else:
                address = getattr(client, "address", address)
                hostname = client.info().hostname
                if run.step("push", lambda: steps.push(client, prep)) is None:
                    run.fail_rest("push failed")
                else:
                    measurement = _benchmark_and_budgets(run, client, profile, prep, config)
                    if prep.reference is not None:
                        run.step("parity", lambda: steps.parity(client, prep))
                    if prep.accuracy_floor_pct is not None:
                        run.step("accuracy", lambda: steps.accuracy(client, prep))
                    outputs = steps.DatasetOutputs(client, prep)  # one pass for every metric
                    for gate in prep.metric_gates:
                        run.step(gate.check, lambda g=gate: steps.metric(outputs, g))
    except Exception as exc:  # noqa: BLE001 - e.g. closing a tunnel to a vanished device
        run.fail_rest(f"{type(exc).__name__}: {exc}")
    return DeviceReport(profile.name, address, run.checks(), measurement, hostname,
                        measurement.runtime if measurement else "",
                        time.perf_counter() - started)


def _benchmark_and_budgets(run: _DeviceRun, client: Any, profile: DeviceProfile, prep: Prepared,
                           config: GateConfig) -> Optional[Measurement]:
    options = resolve_options(config.options, profile)
    m = run.step("benchmark", lambda: steps.benchmark(client, prep, options, config.store))
    for name, limit in profile.budgets.items():
        run.step(f"budget.{name}", lambda n=name, lim=limit: budget_outcome(n, lim, m, prep))
    if prep.baseline is not None:
        run.step(regression.CHECK, lambda: regression.check_regression(
            client, prep, options, config.baseline_rounds, config.max_regression_pct,
            config.store))
    return m


def run_gate(artifact: Path, fleet: Fleet, config: Optional[GateConfig] = None,
             on_device: Optional[Callable[[DeviceReport], None]] = None,
             on_progress: Optional[Callable[[DeviceReport, Tally], None]] = None) -> GateReport:
    """Validates one artifact on every device of a fleet, `config.max_workers` at a time.

    Args:
        artifact: The model file (.tflite, .onnx, .pt2).
        fleet: The devices; each profile's budgets apply to it.
        config: References, data and options (default GateConfig()).
        on_device: Called with each device's report as it completes (any order).
        on_progress: Like `on_device`, with the tally (done, failed, remaining, in flight).

    Raises:
        ConfigError / ModelFileError: Bad artifact, reference or data (before any device).
    """
    config = config or GateConfig()
    if not Path(artifact).is_file():
        raise ModelFileError(f"{artifact}: no such artifact")
    prep = prepare(Path(artifact), config)
    started_unix, started = time.time(), time.perf_counter()

    def report_of(done: Done) -> DeviceReport:
        if done.value is not None:
            return done.value
        reason = done.error if done.timed_out else f"the gate failed: {done.error}"
        checks = tuple(CheckResult(done.item.name, name, False, f"{reason} (--device-timeout)"
                                   if done.timed_out else reason)
                       for name in plan_checks(done.item, prep))
        return DeviceReport(done.item.name, done.item.address or "", checks,
                            duration_s=done.seconds)

    def arrived(done: Done, tally: Tally) -> None:
        report = report_of(done)
        if on_device is not None:
            on_device(report)
        if on_progress is not None:
            on_progress(report, tally)

    outcomes = run_bounded(fleet.devices, lambda p: validate_device(p, prep, config),
                           config.max_workers or DEFAULT_MAX_PARALLEL, config.device_timeout_s,
                           arrived, failed=lambda r: not r.passed, name="gate")
    reports = tuple(report_of(d) for d in outcomes)
    settings = {
        "reference": prep.reference.source if prep.reference else None,
        "data": config.data, "accuracy_floor_pct": prep.accuracy_floor_pct,
        "accuracy_basis": prep.accuracy_basis or None, "options": asdict(config.options),
        "run_id": prep.run_id, "metrics": metrics.settings(prep.metric_gates) or None,
        "baseline": ({"path": str(prep.baseline.path), "sha256": prep.baseline.sha256,
                      "max_regression_pct": config.max_regression_pct,
                      "rounds": config.baseline_rounds} if prep.baseline else None),
    }
    report = GateReport(str(prep.artifact), prep.sha256, prep.size_bytes, fleet.name,
                        prep.precision, reports, started_unix, time.perf_counter() - started,
                        settings)
    if config.store:  # the finished gate, per device and check, in the results database
        from toolkit.db.validation import record_gate

        record_gate(report)
    return report

"""The tuning loop: propose → build → measure on every device → judge accuracy → store.

Every trial is written to the run's database (and each measurement to the results store)
the moment it exists. `--resume RUN_ID` replays the strategy from the start: proposals already
stored are answered from the database, so nothing stored is built, measured or judged again.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from toolkit.db.runs import resume_command
from toolkit.errors import (
    AgentTimeoutError,
    AgentUnreachableError,
    DatabaseUnreachableError,
    SetupError,
)
from toolkit.results.store import ResultsStore
from toolkit.search import make_strategy
from toolkit.search.base import Candidate, CandidateKind, Trial, TrialStatus
from toolkit.tune.artifacts import group_costs, prunable_layers
from toolkit.tune.budgets import ResolvedBudgets, resolve_budgets
from toolkit.tune.build import Build, Builder
from toolkit.tune.config import TuneConfig
from toolkit.tune.executors.base import Executor
from toolkit.tune.executors.local import LocalExecutor
from toolkit.tune.finish import finish
from toolkit.tune.live import LiveView
from toolkit.tune.measure import Device, Measurer, figures_from
from toolkit.tune.trialdb import TrialDB

DB_FILE = "trials.sqlite"


@dataclass
class Session:
    """What one trial needs: the run's parts, wired once."""

    config: TuneConfig
    db: TrialDB
    builder: Builder
    measurer: Measurer
    devices: list[Device]
    data: Any
    live: LiveView
    memo: dict[str, Trial] = field(default_factory=dict)
    executor: Executor = field(default_factory=LocalExecutor)


def run_tune(config: TuneConfig, store: Optional[ResultsStore] = None,
             live: Optional[LiveView] = None, log: Optional[Callable[[str], None]] = None,
             executor: Optional[Executor] = None) -> Any:
    """Runs (or resumes) a tuning run and writes result.json, the chosen artifact, report.html.

    Args:
        config: the run's configuration (saved to run.json).
        store: the results store (default: the one under the edgeloop home).
        live: the live view (default: one on stderr).
        log: receives the build steps' progress lines.
        executor: where builds and measurements run (default: `LocalExecutor`, this host).

    Returns:
        The `TuneResult` (also in `<run dir>/result.json`).

    Raises:
        AgentUnreachableError / AgentTimeoutError: a device was lost; the message says how to
            resume. ConfigError: a bad model, dataset, device or budget.
        SetupError: the model does not fit the dataset, or the base model cannot be built or
            its accuracy judged (before any candidate is tried).
    """
    from toolkit.data import load_dataset
    from toolkit.models import load_model
    from toolkit.models.checks import check_setup

    loaded = load_model(config.model, config.input_shape)
    data = load_dataset(config.data)
    check_setup(loaded, data)  # a model that cannot meet its data stops here, in one line
    config.save()  # a new run's configuration, or a resumed one's new trial cap/time limit
    store = store or ResultsStore()
    db = TrialDB(config.run_dir / DB_FILE)
    live = live or LiveView(0)
    started = time.monotonic()
    executor = executor or LocalExecutor()
    executor.start(config.model, config.data)
    with contextlib.ExitStack() as stack:
        stack.callback(executor.close)
        devices = stack.enter_context(executor.open_devices(config.devices))
        measurer = Measurer(devices, db, store, config.run_id, config.bench,
                            reuse_store=config.reuse_measurements)
        builder = executor.builder(loaded.module, loaded.input_shape, data, db, log,
                                   config.seed)
        session = Session(config, db, builder, measurer, devices, data, live,
                          {t.candidate.key: t for t in db.trials()}, executor)
        try:
            history, budgets, stopped = _search(session, loaded, started)
        except (AgentUnreachableError, AgentTimeoutError, DatabaseUnreachableError) as exc:
            raise type(exc)(f"{exc}; the run is saved, continue it with "
                            f"`{resume_command(config.run_id, config.out_dir)}`") from None
        finally:
            measurer.close()
        return finish(session, history, budgets, stopped)


def _search(session: Session, loaded: Any, started: float
            ) -> tuple[list[Trial], ResolvedBudgets, str]:
    config, live = session.config, session.live
    threads = session.config.space.default("threads")
    base_candidate = Candidate([], int(threads or 0), {}, CandidateKind.BASE, "base model")
    live.message(f"run {config.run_id}: {config.strategy} on {', '.join(config.devices)}; "
                 f"measuring the base model")
    base_stored = base_candidate.key in session.memo
    base = run_trial(session, base_candidate, 0, None)
    _require_base(config, base)
    profiles = {d.label: d.profile for d in session.devices}
    budgets = resolve_budgets(config.budgets, profiles, base.figures, base.accuracy_pct)
    base = _judge(session, base, budgets)
    netadapt = config.strategy == "netadapt"
    strategy = make_strategy(config.strategy, config.space, budgets.goal(), config.trials,
                             config.seed, prunable_layers(loaded.module, loaded.input_shape),
                             config.sampler,
                             group_costs(loaded.module, loaded.input_shape) if netadapt else None)
    if config.strategy == "pareto":  # one study for every host working on this run
        from toolkit.db.engine import resolve_url
        from toolkit.search.pareto import study_storage

        storage = study_storage(resolve_url())
        if storage is not None:
            strategy.keep_study_in(storage, f"edgeloop-{config.run_id}")
    live.total = strategy.max_trials
    live.budgets = budgets.budgeted
    for line in budgets.describe():
        live.message(f"budget {line}")
    live.finished(base, [base], stored=base_stored)
    history, stopped = [base], ""
    limit_s = config.time_limit_min * 60 if config.time_limit_min else None
    while not stopped:
        known = {t.candidate.key for t in history}
        batch = [c for c in strategy.ask(history) if c.key not in known]
        if not batch:
            break
        session.executor.prefetch(session.builder,
                                  [c for c in batch if c.key not in session.memo])
        for candidate in batch:
            if limit_s is not None and time.monotonic() - started > limit_s:
                stopped = f"time limit of {config.time_limit_min:g} min reached"
                break
            stored = candidate.key in session.memo
            trial = run_trial(session, candidate, len(history), budgets)
            history.append(trial)
            live.finished(trial, history, stored=stored)
    return history, budgets, stopped


def _require_base(config: TuneConfig, base: Trial) -> None:
    """The base model must build and be judged; otherwise no candidate can be, and the run is a
    setup error, not INFEASIBLE."""
    what = {TrialStatus.BUILD_FAILED: "built", TrialStatus.EVAL_FAILED: "evaluated"}
    if base.status in what:
        reason = base.error or "no reason given"
        raise SetupError(f"tune: the base model {config.model!r} could not be "
                         f"{what[base.status]} on data {config.data!r}: {reason}")


def run_trial(session: Session, candidate: Candidate, number: int,
              budgets: Optional[ResolvedBudgets]) -> Trial:
    """Builds, measures and judges one candidate, and stores the trial (from the store when it
    was run before). Without `budgets` (the base, before budgets exist) it is not stored."""
    if candidate.key in session.memo:
        return session.memo[candidate.key]
    started = time.monotonic()
    session.live.running(number, candidate, "building")
    try:
        built = session.builder.build(candidate)
    except DatabaseUnreachableError:  # storing the build failed, not the build: the run stops
        raise
    except Exception as exc:  # noqa: BLE001 - a failed build is a result the search ranks
        trial = Trial(number, candidate, TrialStatus.BUILD_FAILED, _one_line(exc),
                      elapsed_s=time.monotonic() - started)
        return _judge(session, trial, budgets) if budgets else trial
    judged = candidate.kind != CandidateKind.PROBE
    on = _accuracy_on(session.config.accuracy_on, built) if judged else ""
    errors: list[str] = []
    job = _device_accuracy_job(session, built, errors) if on == "device" else None
    session.live.running(number, candidate, f"measuring on {len(session.devices)} device(s)")
    extra = {"trial": number, "candidate": candidate.key, "kind": candidate.kind.value,
             "note": candidate.note}
    outcome = session.measurer.measure(Path(built.artifact), built.sha256, candidate.threads,
                                       extra, job)
    figures = {label: figures_from(label, m) for label, m in outcome.measurements.items()}
    accuracy = outcome.accuracy if on == "device" else (built.host_accuracy_pct if judged else None)
    failed = [f"{f.device}: {f.error}" for f in figures.values() if f.error]
    status = TrialStatus.MEASURE_FAILED if failed else TrialStatus.OK
    if status == TrialStatus.OK and judged and accuracy is None:
        status = TrialStatus.EVAL_FAILED
    trial = Trial(
        number, candidate, status, "; ".join(failed + errors), built.artifact, built.sha256,
        accuracy, on, figures, new_measurements=outcome.new,
        elapsed_s=time.monotonic() - started,
        info={"widths": built.widths, "parameters": built.parameters,
              "size_bytes": built.size_bytes, "host_accuracy_pct": built.host_accuracy_pct},
    )
    return _judge(session, trial, budgets) if budgets else trial


def _judge(session: Session, trial: Trial, budgets: ResolvedBudgets) -> Trial:
    """Checks the budgets, stores the trial, and returns it."""
    if trial.candidate.key in session.memo:
        return session.memo[trial.candidate.key]
    verdict = budgets.check(trial.figures, trial.accuracy_pct)
    trial.worst, trial.usage, trial.violations = verdict.worst, verdict.usage, verdict.violations
    trial.feasible = verdict.feasible and trial.ok
    session.db.put_trial(trial)
    session.memo[trial.candidate.key] = trial
    return trial


def _accuracy_on(asked: str, built: Build) -> str:
    if asked == "auto":
        return "device" if built.quantized else "host"
    return asked


def _device_accuracy_job(session: Session, built: Build, errors: list[str]
                         ) -> Callable[[Device], Optional[float]]:
    """Accuracy of the artifact run on the device through Infer, cached by (sha, device)."""

    def job(device: Device) -> Optional[float]:
        where = f"device:{device.device_id}"
        stored = session.db.accuracy(built.sha256, where)
        if stored is not None:
            return stored["accuracy_pct"]
        from toolkit.errors import AgentError
        from toolkit.evaluate import evaluate_on_device

        try:
            result = evaluate_on_device(Path(built.artifact), session.data, device.client)
        except (AgentUnreachableError, AgentTimeoutError):
            raise
        except AgentError as exc:
            errors.append(f"accuracy on {device.label}: {_one_line(exc)}")
            return None
        session.db.put_accuracy(built.sha256, where, {"accuracy_pct": result.accuracy_pct,
                                                      "n": result.n})
        return result.accuracy_pct

    return job


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:400]


"""The gate's regression check: the candidate against the deployed model (`--baseline`).

On each device, the baseline and the candidate run in interleaved rounds and are compared
with `toolkit.stats.ab` (the same statistics as `edgeloop compare`). The check fails when the
candidate is slower than the baseline by more than the allowed regression *with confidence*:
the lower bound of the 95% interval of the p50 ratio candidate/baseline lies above
1 + max_regression. A candidate that might be that much slower but is not shown to be passes,
and the message says how large a regression the noise could hide.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.errors import AgentError, ModelFileError
from toolkit.measurement import BenchmarkOptions
from toolkit.transport.model_file import file_sha256, model_format
from toolkit.validate.checks import Outcome

CHECK = "regression"


@dataclass(frozen=True)
class Baseline:
    """The deployed model the candidate is compared with."""

    path: Path
    sha256: str
    size_bytes: int


def prepare_baseline(path: Path) -> Baseline:
    """Checks the baseline file before any device is contacted.

    Raises:
        ModelFileError: missing, or not a model file.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"--baseline {path}: no such model file")
    model_format(path)
    return Baseline(path, file_sha256(path), path.stat().st_size)


def regression_outcome(comparison: Any, max_regression_pct: float, names: tuple[str, str]
                       ) -> Outcome:
    """Judges an ABComparison (A = baseline, B = candidate) against the allowed regression."""
    c = comparison
    limit = 1 + max_regression_pct / 100
    slower_pct = 100 * (c.ratio - 1)
    ci = (f"95% CI {100 * (c.ci_low - 1):+.1f}% to {100 * (c.ci_high - 1):+.1f}%, "
          f"{c.rounds} rounds")
    what = (f"p50 {c.b_p50_ms:.4g} ms vs baseline {names[0]} {c.a_p50_ms:.4g} ms: "
            f"{slower_pct:+.1f}% ({ci})")
    if c.slower_than(limit):
        return Outcome(False, f"{what}: slower than the baseline by {slower_pct:.1f}% with "
                              f"confidence, over the allowed {max_regression_pct:g}% "
                              f"(by {slower_pct - max_regression_pct:.1f} points)",
                       slower_pct, max_regression_pct, "%")
    if c.ci_high > limit:
        note = (f"not shown to regress more than {max_regression_pct:g}% at this noise "
                f"(a regression up to {100 * (c.ci_high - 1):.1f}% is not ruled out)")
    else:
        note = f"within the allowed {max_regression_pct:g}% regression"
    return Outcome(True, f"{what}: {note}", slower_pct, max_regression_pct, "%")


def check_regression(client: Any, prep: Any, options: BenchmarkOptions, rounds: int,
                     max_regression_pct: float, store: bool) -> Outcome:
    """Pushes the baseline, runs baseline and candidate in interleaved rounds, judges them.

    Every measurement is written to the results store as it arrives (when `store`), tagged
    with the gate's run id, its role (baseline/candidate) and round.
    """
    from toolkit.stats.rounds import run_interleaved

    baseline: Baseline = prep.baseline
    sha = client.push(baseline.path)
    if sha != baseline.sha256:
        raise AgentError(f"pushed baseline sha {sha[:12]} differs from the file's "
                         f"{baseline.sha256[:12]}")
    names = (baseline.path.name, prep.artifact.name)
    results = None
    if store:
        from toolkit.results.store import ResultsStore

        results = ResultsStore()

    def arrived(which: str, round_index: int, m: Any) -> None:
        if results is not None:
            results.append(m, run_id=prep.run_id, extra={
                "source": "validate", "check": CHECK, "round": round_index,
                "role": "baseline" if which == "a" else "candidate"})

    run = run_interleaved(client, baseline.sha256, prep.sha256, rounds, options, names=names,
                          on_measurement=arrived)
    outcome = regression_outcome(run.comparison, max_regression_pct, names)
    detail = {"baseline": str(baseline.path), "baseline_sha256": baseline.sha256,
              "candidate": str(prep.artifact), "max_regression_pct": max_regression_pct,
              **run.comparison.to_json()}
    return Outcome(outcome.passed, outcome.message, outcome.measured, outcome.limit,
                   outcome.unit, value=run.comparison, detail=detail)

"""A tuning run's configuration: what to tune, where, under which budgets; saved as run.json.

A resumed run reads its configuration back from run.json, so it continues exactly the search
it interrupted (only the trial cap and the time limit may change).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from toolkit.errors import ConfigError
from toolkit.measurement import BenchmarkOptions
from toolkit.paths import edgeloop_home
from toolkit.search.space import SearchSpace, default_space
from toolkit.tune.budgets import BudgetRequest

STRATEGY_NAMES = ("netadapt", "pareto", "grid")
ACCURACY_ON = ("auto", "host", "device")
RUN_FILE = "run.json"


def tune_benchmark_options() -> BenchmarkOptions:
    """Benchmark options for tuning: shorter than a lab profile, still hundreds of runs for a
    sub-millisecond model (20 runs and 0.3 s at least, after 5 warm-up runs / 0.1 s)."""
    return BenchmarkOptions(warmup_runs=5, warmup_min_seconds=0.1, min_runs=20, min_seconds=0.3,
                            timeout_seconds=120)


@dataclass(frozen=True)
class TuneConfig:
    """Everything that decides a tuning run.

    Attributes:
        model: model spec (`digits-cnn`, `file.py:function`, `.pt2`).
        data: dataset spec (`digits`, `digits-32`, `.npz`, `module:function`); None (the
            default) becomes the model's own (`toolkit.models.default_dataset`).
        devices: device specs (`local`, `host:port`, profile names); the budget holds on each.
        strategy: `netadapt`, `pareto` or `grid`.
        budgets: the budgets as asked.
        space: the search space.
        trials: most trials after the base; None: the strategy's default.
        time_limit_min: stop proposing after this many minutes; None: no limit.
        accuracy_on: `auto` (device for quantized artifacts, host otherwise), `host`, `device`.
        seed: seed for training and the samplers.
        sampler: `tpe` or `nsga2` (pareto only).
        bench: benchmark options for every measurement.
        input_shape: model input shape with batch dimension; None: from the model.
        reuse_measurements: take a measurement from the results store when an earlier run
            measured the same artifact on the same device with the same options (default
            True); False measures every artifact again (a resumed run still reuses its own).
        run_id: the run's id; its files live in `out_dir/run_id`.
        out_dir: folder holding runs (default `<edgeloop home>/runs`).
    """

    model: str = "digits-cnn"
    data: Optional[str] = None
    devices: tuple[str, ...] = ("local",)
    strategy: str = "netadapt"
    budgets: BudgetRequest = field(default_factory=BudgetRequest)
    space: SearchSpace = field(default_factory=default_space)
    trials: Optional[int] = None
    time_limit_min: Optional[float] = None
    accuracy_on: str = "auto"
    seed: int = 0
    sampler: str = "tpe"
    bench: BenchmarkOptions = field(default_factory=tune_benchmark_options)
    input_shape: Optional[tuple[int, ...]] = None
    reuse_measurements: bool = True
    run_id: str = field(default_factory=lambda: new_run_id())
    out_dir: Path = field(default_factory=lambda: edgeloop_home() / "runs")

    def __post_init__(self) -> None:
        if self.data is None:
            from toolkit.models.reference import default_dataset

            object.__setattr__(self, "data", default_dataset(self.model))
        if self.strategy not in STRATEGY_NAMES:
            raise ConfigError(
                f"--strategy: expected one of {STRATEGY_NAMES}, got {self.strategy!r}"
            )
        if self.accuracy_on not in ACCURACY_ON:
            raise ConfigError(
                f"--accuracy-on: expected one of {ACCURACY_ON}, got {self.accuracy_on!r}"
            )
        if not self.devices:
            raise ConfigError("--device: expected at least one device")
        if len(set(self.devices)) != len(self.devices):
            raise ConfigError(f"--device: a device is given twice: {list(self.devices)}")
        if self.trials is not None and self.trials < 1:
            raise ConfigError(f"--trials: expected a whole number >= 1, got {self.trials}")
        if self.time_limit_min is not None and self.time_limit_min <= 0:
            raise ConfigError(f"--time-limit: expected minutes > 0, got {self.time_limit_min}")

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.run_id

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(budgets=self.budgets.to_json(), space=self.space.to_mapping(),
                    bench=asdict(self.bench), out_dir=str(self.out_dir),
                    devices=list(self.devices))
        return data

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TuneConfig:
        values = dict(raw)
        values["budgets"] = BudgetRequest.from_json(raw["budgets"])
        values["space"] = SearchSpace.from_mapping(raw["space"], where=RUN_FILE)
        values["bench"] = BenchmarkOptions(**raw["bench"])
        values["devices"] = tuple(raw["devices"])
        values["out_dir"] = Path(raw["out_dir"])
        if raw.get("input_shape"):
            values["input_shape"] = tuple(raw["input_shape"])
        return cls(**values)

    def save(self) -> Path:
        """Writes run.json into the run folder (creating it)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / RUN_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2))
        tmp.replace(path)
        return path


def new_run_id() -> str:
    """A sortable, unique run id, e.g. `20250101-120000-3fa2`."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def load_run(run_id: str, out_dir: Optional[Path] = None, **changes: Any) -> TuneConfig:
    """Reads the configuration of an earlier run to resume it.

    Args:
        run_id: the run's id, or the path of its folder.
        out_dir: folder holding runs (default `<edgeloop home>/runs`).
        changes: fields to change on resume (`trials`, `time_limit_min`).

    Raises:
        ConfigError: no run.json for that id.
    """
    folder = Path(run_id)
    if not (folder / RUN_FILE).is_file():
        folder = Path(out_dir or edgeloop_home() / "runs") / run_id
    path = folder / RUN_FILE
    if not path.is_file():
        raise ConfigError(f"--resume {run_id}: no {RUN_FILE} found at {path}")
    try:
        config = TuneConfig.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a run configuration edgeloop can read: {exc}") from None
    # The folder may have moved since the run started.
    config = replace(config, out_dir=folder.parent, run_id=folder.name)
    allowed = {k: v for k, v in changes.items() if v is not None}
    unknown = set(allowed) - {"trials", "time_limit_min"}
    if unknown:
        raise ConfigError(f"--resume: cannot change {sorted(unknown)} of a run; start a new one")
    return replace(config, **allowed)

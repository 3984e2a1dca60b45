"""Multi-objective search with Optuna (TPE or NSGA-II) over the recipe parameters.

Objectives: accuracy (maximised) and every metric the base model was measured with on all
devices — p90 latency, peak memory, energy, file size — worst case over devices (minimised).
Budgets and the accuracy limit are Optuna constraints (feasible when every value is <= 0), so
the sampler learns where the feasible region is. Optuna is driven ask-and-tell: proposals come
from the seeded sampler and the measured trials, so a resumed run replays them exactly.

With `keep_study_in(storage, name)` the study lives in a database (Optuna's RDB storage) under
the run's name, so drivers on several hosts ask and tell one study. `study_storage(url)` puts
it beside the results database: in PostgreSQL a schema of its own (`edgeloop_optuna`: Optuna's
`trials` and `alembic_version` tables would collide with edgeloop's), for SQLite a file beside
it; an in-memory SQLite database keeps the study in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

from toolkit.errors import ConfigError
from toolkit.search.base import CandidateKind, Goal, Strategy, Trial

OBJECTIVE_METRICS = ("latency_p90_ms", "memory_mb", "energy_mj", "size_kb")
SAMPLERS = ("tpe", "nsga2")
CONSTRAINTS_ATTR = "edgeloop_constraints"
OPTUNA_SCHEMA = "edgeloop_optuna"
OPTUNA_SQLITE_FILE = "optuna-studies.db"


class ParetoSearch(Strategy):
    """Optuna multi-objective search.

    Args:
        space: the search space (its dimensions become categorical distributions).
        goal: resolved budgets; they become constraints.
        max_trials: most trials to run, the base excluded.
        seed: the sampler's seed.
        sampler: `tpe` (default; better with few trials) or `nsga2`.
        startup_trials: random trials before TPE models the history (default 5).
    """

    name = "pareto"

    def __init__(
        self,
        space: Any,
        goal: Goal,
        max_trials: int,
        seed: int = 0,
        sampler: str = "tpe",
        startup_trials: int = 5,
    ) -> None:
        super().__init__(space, goal, max_trials, seed)
        if sampler not in SAMPLERS:
            raise ConfigError(f"pareto sampler: expected one of {SAMPLERS}, got {sampler!r}")
        self.sampler_name = sampler
        self.startup_trials = startup_trials
        self._study: Any = None
        self._objectives: list[str] = []
        self._pending: dict[int, str] = {}  # optuna trial number -> candidate key
        self._optuna_trials: dict[int, Any] = {}
        self._storage: Any = None
        self._study_name: Optional[str] = None

    def keep_study_in(self, storage: Any, study_name: str) -> None:
        """Keeps the Optuna study in `storage` (see `study_storage`) as `study_name`.

        The run's trial store stays the source of truth: a driver starting (or resuming, on
        any host) the run makes the study again and replays the stored trials into it, so the
        proposals are the same as without storage and the study always shows the run as
        stored. Anyone can read it meanwhile (optuna-dashboard, `optuna.load_study`)."""
        self._storage, self._study_name = storage, study_name

    def ask(self, history: Sequence[Trial]) -> list:
        import optuna

        by_key = {t.candidate.key: t for t in history}
        if self._study is None:
            self._start(history)
        for number, key in list(self._pending.items()):
            if key in by_key:
                trial = self._optuna_trials.pop(number)
                self._outlasting(self._tell, trial, by_key[key])
                del self._pending[number]
        if self.remaining(history) <= 0:
            return []
        distributions = {
            d.name: optuna.distributions.CategoricalDistribution(list(d.choices))
            for d in self.space.dimensions
        }
        # Points already run are told again from their stored figures, not run twice.
        for _ in range(max(50, 4 * self.space.size)):
            trial = self._outlasting(self._study.ask, distributions)
            candidate = self.space.candidate(dict(trial.params), note=self.sampler_name)
            if candidate.key in by_key:
                self._outlasting(self._tell, trial, by_key[candidate.key])
                continue
            self._pending[trial.number] = candidate.key
            self._optuna_trials[trial.number] = trial
            return [candidate]
        return []

    def _outlasting(self, call: Any, *args: Any) -> Any:
        """`call(*args)` on the study, waited through a restart of the database that keeps it
        (see `toolkit.db.engine.retried`)."""
        if self._storage is None:
            return call(*args)
        from toolkit.db.engine import get_engine, retried

        return retried(get_engine(), lambda: call(*args))

    def _start(self, history: Sequence[Trial]) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        base = next((t for t in history if t.candidate.kind == CandidateKind.BASE), None)
        measured = base.worst if base is not None else {}
        self._objectives = [m for m in OBJECTIVE_METRICS if m in measured]
        directions = ["maximize"] + ["minimize"] * len(self._objectives)
        if self.sampler_name == "nsga2":
            sampler = optuna.samplers.NSGAIISampler(
                population_size=max(4, min(10, self.max_trials // 3)),
                seed=self.seed,
                constraints_func=_constraints,
            )
        else:
            sampler = optuna.samplers.TPESampler(
                seed=self.seed,
                n_startup_trials=self.startup_trials,
                multivariate=True,
                constraints_func=_constraints,
            )
        if self._storage is not None:
            try:
                optuna.delete_study(study_name=self._study_name, storage=self._storage)
            except KeyError:  # a new run: no study yet
                pass
        self._study = optuna.create_study(directions=directions, sampler=sampler,
                                          storage=self._storage, study_name=self._study_name)

    def _tell(self, trial: Any, done: Trial) -> None:
        from optuna.trial import TrialState

        trial.set_user_attr(CONSTRAINTS_ATTR, self._constraint_values(done))
        values = self._values(done)
        if values is None:
            self._study.tell(trial, state=TrialState.FAIL)
        else:
            self._study.tell(trial, values)

    def _values(self, done: Trial) -> Optional[list[float]]:
        if not done.judged or any(m not in done.worst for m in self._objectives):
            return None
        return [float(done.accuracy_pct)] + [float(done.worst[m]) for m in self._objectives]

    def _constraint_values(self, done: Trial) -> list[float]:
        # A budgeted metric the devices did not measure counts as broken (usage 2).
        values = [done.usage.get(m, 2.0) - 1.0 for m in self.goal.budgeted]
        if self.goal.min_accuracy_pct is not None and done.accuracy_pct is not None:
            values.append(self.goal.min_accuracy_pct - done.accuracy_pct)
        return values or [0.0]


def _constraints(frozen: Any) -> Sequence[float]:
    return frozen.user_attrs.get(CONSTRAINTS_ATTR, [0.0])


def study_storage(db_url: str) -> Any:
    """Optuna storage beside the results database at `db_url` (a SQLAlchemy URL); None for an
    in-memory SQLite database (the study stays in this process)."""
    import optuna
    from sqlalchemy.engine import make_url

    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            return None
        from pathlib import Path

        beside = Path(url.database).with_name(OPTUNA_SQLITE_FILE)
        return optuna.storages.RDBStorage(f"sqlite:///{beside}")
    if url.get_backend_name() == "postgresql":
        from sqlalchemy import create_engine, text

        engine = create_engine(url)
        try:
            with engine.begin() as conn:
                conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {OPTUNA_SCHEMA}"))
        finally:
            engine.dispose()
        return optuna.storages.RDBStorage(
            url.render_as_string(hide_password=False),
            # pre-ping, as edgeloop's own engine: a pooled connection the last database restart
            # killed is replaced, not found by the study's next call as a second outage
            engine_kwargs={"pool_pre_ping": True,
                           "connect_args": {"options": f"-c search_path={OPTUNA_SCHEMA}"}})
    raise ConfigError(f"pareto: an Optuna study cannot live in a {url.get_backend_name()} "
                      "database; use PostgreSQL or SQLite")

"""Search strategies over compression recipes: NetAdapt-style greedy, Optuna Pareto, grid."""

from __future__ import annotations

from typing import Any, Optional

from toolkit.errors import ConfigError
from toolkit.search.base import Candidate, CandidateKind, Goal, Strategy, Trial, TrialStatus
from toolkit.search.grid import GridSearch
from toolkit.search.netadapt import NetAdaptSearch
from toolkit.search.pareto import ParetoSearch
from toolkit.search.space import SearchSpace

STRATEGIES: dict[str, type[Strategy]] = {
    GridSearch.name: GridSearch,
    ParetoSearch.name: ParetoSearch,
    NetAdaptSearch.name: NetAdaptSearch,
}
DEFAULT_TRIALS = {"pareto": 20, "netadapt": 40}


def make_strategy(
    name: str,
    space: SearchSpace,
    goal: Goal,
    max_trials: Optional[int] = None,
    seed: int = 0,
    layers: Optional[dict[str, int]] = None,
    sampler: str = "tpe",
    costs: Optional[dict[str, float]] = None,
) -> Strategy:
    """Builds a strategy by name.

    Args:
        name: `netadapt`, `pareto` or `grid`.
        space: the search space.
        goal: resolved budgets.
        max_trials: most trials after the base; None: grid's space size, 20 for pareto,
            40 for netadapt (a cap; it stops when the budget holds).
        seed: sampler seed.
        layers: prunable layers of the base model {name: channels} (netadapt).
        sampler: `tpe` or `nsga2` (pareto).
        costs: host-side MACs of one unit of each group (netadapt).
    """
    if name not in STRATEGIES:
        raise ConfigError(f"--strategy: expected one of {sorted(STRATEGIES)}, got {name!r}")
    trials = max_trials or DEFAULT_TRIALS.get(name) or space.size
    extra: dict[str, Any] = {}
    if name == "netadapt":
        extra["layers"] = layers
        extra["costs"] = costs
    if name == "pareto":
        extra["sampler"] = sampler
    return STRATEGIES[name](space, goal, trials, seed=seed, **extra)


__all__ = [
    "Candidate", "CandidateKind", "Goal", "SearchSpace", "Strategy", "Trial", "TrialStatus",
    "STRATEGIES", "make_strategy",
]

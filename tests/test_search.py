"""Search pieces that need no device: non-dominated sorting, the space, budget parsing."""

from __future__ import annotations

import pytest

from toolkit.devices.profile import Budgets, DeviceProfile
from toolkit.errors import ConfigError
from toolkit.search.base import Candidate, CandidateKind, DeviceFigures
from toolkit.search.pareto_front import non_dominated_sort, pareto_front
from toolkit.search.space import Dimension, SearchSpace, default_space
from toolkit.tune.budgets import BudgetRequest, parse_assignments, resolve_budgets


def test_non_dominated_sort_ranks_fronts_with_mixed_senses():
    # (accuracy up, latency down)
    points = [(98, 5), (97, 3), (96, 4), (99, 9), (95, 2), (96, 6)]
    ranks = non_dominated_sort(points, ["max", "min"])
    assert [i for i, r in enumerate(ranks) if r == 0] == [0, 1, 3, 4]
    assert ranks[2] == 1  # beaten by (97, 3) only
    assert ranks[5] == 2  # beaten by (96, 4), itself on the second front
    assert pareto_front(points, ["max", "min"]) == [0, 1, 3, 4]


def test_equal_points_do_not_dominate_each_other():
    assert pareto_front([(1, 1), (1, 1)], ["max", "min"]) == [0, 1]


def test_space_turns_a_point_into_an_ordered_recipe():
    dims = (Dimension("prune_amount", (0.0, 0.5)), Dimension("quantize", (None, "int8-static")),
            Dimension("threads", (1, 2)))
    space = SearchSpace(dims, finetune_epochs=2, calibration=64)
    c = space.candidate({"prune_amount": 0.5, "quantize": "int8-static", "threads": 2})
    assert c.recipe == [
        {"prune": {"method": "l1-structured", "amount": 0.5}},
        {"finetune": {"epochs": 2}},
        {"quantize": {"scheme": "int8-static", "calibration": 64}},
    ]
    assert c.threads == 2 and c.kind == CandidateKind.TRIAL
    # The zero point is the base model: empty recipe, and only threads tell them apart.
    assert space.candidate({}).recipe == []
    assert space.size == 8 and len(list(space.grid())) == 8


def test_candidates_differing_only_in_threads_share_a_build_not_a_trial():
    a = Candidate([{"prune": {"amount": 0.5}}], threads=1)
    b = Candidate([{"prune": {"amount": 0.5}}], threads=2)
    assert a.recipe_key == b.recipe_key and a.key != b.key
    probe = Candidate(a.recipe, threads=1, kind=CandidateKind.PROBE)
    assert probe.key != a.key  # a probe's accuracy was never judged


def test_space_round_trips_through_its_mapping_and_rejects_unknown_dimensions():
    space = default_space()
    assert SearchSpace.from_mapping(space.to_mapping()) == space
    with pytest.raises(ConfigError, match="prune_ratio: unknown dimension"):
        SearchSpace.from_mapping({"dimensions": {"prune_ratio": [0.5]}})


def test_budget_assignments_accept_short_names_and_reject_bad_ones():
    assert parse_assignments(["latency_p90=0.7", "memory_mb=40"], "--budget-ratio") == {
        "latency_p90_ms": 0.7, "memory_mb": 40.0}
    with pytest.raises(ConfigError, match="--budget 'speed=3'.*latency_p90_ms"):
        parse_assignments(["speed=3"], "--budget")
    with pytest.raises(ConfigError, match="expected a number"):
        parse_assignments(["size_kb=big"], "--budget")


def test_budgets_resolve_per_device_and_the_worst_device_decides():
    profiles = {
        "fast": DeviceProfile(name="fast", address="127.0.0.1:1", budgets=Budgets(memory_mb=50)),
        "slow": DeviceProfile(name="slow", address="127.0.0.1:2"),
    }
    base = {"fast": DeviceFigures("fast", latency_p90_ms=2.0, memory_mb=10),
            "slow": DeviceFigures("slow", latency_p90_ms=4.0, memory_mb=10)}
    request = BudgetRequest(absolute={"latency_p90_ms": 3.5}, ratios={"latency_p90_ms": 0.9},
                            max_accuracy_drop=1.0)
    budgets = resolve_budgets(request, profiles, base, base_accuracy_pct=98.0)
    assert budgets.limits["fast"] == {"memory_mb": 50, "latency_p90_ms": pytest.approx(1.8)}
    assert budgets.limits["slow"] == {"latency_p90_ms": 3.5}  # the absolute limit is stricter
    assert budgets.min_accuracy_pct == 97.0
    trial = {"fast": DeviceFigures("fast", latency_p90_ms=1.7, memory_mb=12),
             "slow": DeviceFigures("slow", latency_p90_ms=3.6, memory_mb=12)}
    verdict = budgets.check(trial, 97.5)
    assert not verdict.feasible
    assert [(v.metric, v.device) for v in verdict.violations] == [("latency_p90_ms", "slow")]
    assert verdict.usage["latency_p90_ms"] == pytest.approx(3.6 / 3.5)
    assert verdict.worst["latency_p90_ms"] == 3.6


def test_a_budget_the_device_cannot_measure_is_broken_not_assumed():
    profiles = {"local": DeviceProfile(name="local", transport="local")}
    budgets = resolve_budgets(BudgetRequest(absolute={"energy_mj": 2.0}), profiles, {}, 98.0)
    verdict = budgets.check({"local": DeviceFigures("local", latency_p90_ms=1.0)}, 98.0)
    assert not verdict.feasible
    assert verdict.violations[0].describe() == "energy_mj not measured on local (limit 2)"


def test_netadapt_without_a_budget_is_refused_with_the_options_to_use():
    from toolkit.search import make_strategy
    from toolkit.search.base import Goal

    with pytest.raises(ConfigError, match="--budget-ratio"):
        make_strategy("netadapt", default_space(), Goal(), layers={"conv": 8})

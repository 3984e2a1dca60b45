"""NetAdapt over dependency groups: every lookup and proposal cuts at least one unit, a cut that
built its parent again is neither chosen nor proposed again, and few lookups are spent."""

from __future__ import annotations

import pytest

from toolkit.search.base import Candidate, CandidateKind, DeviceFigures, Goal, Trial
from toolkit.search.netadapt import NetAdaptSearch
from toolkit.search.space import SearchSpace

GROUPS = {"stem.0": 16, "block.expand.0": 64, "block.se.fc1": 16}
COSTS = {"stem.0": 4000.0, "block.expand.0": 2000.0, "block.se.fc1": 20.0}


def _strategy(round_to: int = 1) -> NetAdaptSearch:
    space = SearchSpace((), round_to=round_to)
    goal = Goal(budgeted=("latency_p90_ms",), primary="latency_p90_ms")
    return NetAdaptSearch(space, goal, max_trials=12, layers=GROUPS, costs=COSTS)


def _trial(number: int, candidate: Candidate, usage: float, sha: str) -> Trial:
    judged = candidate.kind != CandidateKind.PROBE
    return Trial(number, candidate, sha256=sha, accuracy_pct=90.0 if judged else None,
                 figures={"local": DeviceFigures("local", latency_p90_ms=usage)},
                 usage={"latency_p90_ms": usage}, feasible=usage <= 1.0)


def _prune_keep(candidate: Candidate) -> dict[str, int]:
    prunes = [step["prune"] for step in candidate.recipe if "prune" in step]
    return prunes[-1]["keep"]


def test_lookups_go_to_the_costliest_groups_and_every_cut_removes_a_unit():
    strategy = _strategy()
    history = [_trial(0, Candidate(kind=CandidateKind.BASE), 1.4, "base")]
    probes = strategy.ask(history)
    assert [c.params["probe"] for c in probes] == ["block.expand.0", "stem.0"]  # most MACs
    for c in probes:
        group = c.params["probe"]
        assert _prune_keep(c) == {group: GROUPS[group] // 2}
    history += [_trial(1, probes[0], 1.2, "p1"), _trial(2, probes[1], 1.1, "p2")]
    proposals = strategy.ask(history)
    assert 1 <= len(proposals) <= 3
    for c in proposals:
        group, keep = c.params["layer"], c.params["keep"]
        assert _prune_keep(c) == {group: keep} and keep < GROUPS[group]


def test_a_cut_that_built_its_parent_again_is_not_chosen_nor_proposed_again():
    strategy = _strategy()
    history = [_trial(0, Candidate(kind=CandidateKind.BASE), 1.4, "base")]
    probes = strategy.ask(history)
    history += [_trial(1 + i, c, 1.2, f"p{i}") for i, c in enumerate(probes)]
    proposals = strategy.ask(history)
    same = proposals[0]
    history += [_trial(len(history), same, 0.9, "base")]  # same sha as its parent
    history += [_trial(len(history), c, 1.3, f"t{i}") for i, c in enumerate(proposals[1:])]
    following = strategy.ask(history)
    assert all(c.params.get("layer") != same.params["layer"] for c in following)
    assert all(c.kind != CandidateKind.FINAL for c in following)


def test_round_to_keeps_proposed_widths_at_multiples():
    strategy = _strategy(round_to=8)
    history = [_trial(0, Candidate(kind=CandidateKind.BASE), 1.4, "base")]
    probes = strategy.ask(history)
    history += [_trial(1 + i, c, 1.25, f"p{i}") for i, c in enumerate(probes)]
    for c in probes + strategy.ask(history):
        (group, keep), = _prune_keep(c).items()
        assert keep % 8 == 0 and keep < GROUPS[group]
        assert c.recipe[0]["prune"]["round_to"] == 8


# --- a real run: the zoo's DS-CNN, a real local agent, real measurements ----------------------

def kws_data():
    """A small seeded 10-class task on 1×49×10 inputs (one smooth template per class + noise)."""
    import torch

    from toolkit.data import Dataset

    generator = torch.Generator().manual_seed(0)
    templates = torch.nn.functional.interpolate(torch.randn((10, 1, 7, 5), generator=generator),
                                                size=(49, 10), mode="bilinear")
    labels = torch.randint(0, 10, (400,), generator=generator)
    x = templates[labels] + 0.5 * torch.randn((400, 1, 49, 10), generator=generator)
    return Dataset("kws", x[:300], labels[:300], x[300:], labels[300:], 10, (1, 49, 10))


@pytest.mark.slow
def test_netadapt_meets_a_latency_ratio_on_the_ds_cnn_within_12_trials(tmp_path):
    from toolkit.search.space import Dimension
    from toolkit.tune.budgets import BudgetRequest
    from toolkit.tune.config import TuneConfig
    from toolkit.tune.runner import run_tune
    from toolkit.tune.trialdb import TrialDB

    space = SearchSpace((Dimension("quantize", (None, "int8-static")),), finetune_epochs=0,
                        final_epochs=0)
    config = TuneConfig(model="zoo:ds_cnn", data=f"{__file__}:kws_data", strategy="netadapt",
                        budgets=BudgetRequest(ratios={"latency_p90_ms": 0.7}), space=space,
                        trials=12, out_dir=tmp_path, reuse_measurements=False)
    result = run_tune(config, live=None, log=None)
    history = TrialDB(config.run_dir / "trials.sqlite").trials()
    assert result.feasible, result.message
    assert 1 <= result.trials <= 12 and len(history) == result.trials + 1  # the base + trials
    base = history[0]
    built = [t for t in history[1:] if t.sha256]
    assert built and all(t.sha256 != base.sha256 for t in built)  # no unchanged model measured
    assert len({t.sha256 for t in built}) == len(built)  # nor one measured twice


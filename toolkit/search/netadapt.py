"""NetAdapt-style greedy pruning of dependency groups steered by on-device measurements
(Yang et al., 2018).

The unit is a dependency group (`toolkit.compress.groups`): channels coupled through residual
adds, depthwise convs, squeeze-excite, concat, named by their leading layer; an attention
block's heads. Each iteration asks for a fixed reduction of one measured metric: the budgeted
metric the current model is furthest over (p90 latency, memory, energy or size; worst case over
devices, as a fraction of each device's limit). It proposes the current model with just enough
units of one group removed to reach the reduction — for the few groups (`proposals`) that
reach it with the smallest share of their width cut — fine-tunes each briefly, measures it on
the devices, and keeps the most accurate one that reached the target. It stops when every
budget holds, then fine-tunes the chosen model longer.

Iteration 0 tries the space's quantization schemes on the base model: a scheme that meets every
budget alone ends the search; otherwise the most accurate scheme that cut the metric by a step
is kept, and the pruning that follows is measured with it.

How many units are "just enough" comes from a lookup table of real measurements
(`netadapt_table`): first a lookup probe for each of the `probes` groups costing the most
host-side MACs (the unpruned model with half of that group cut, no fine-tune: a structured
prune's latency does not depend on the weight values), then every measured proposal adds what
its group saved per unit; groups never measured are estimated through their MACs per unit.
Every proposal and probe removes at least one unit (widths are the exact group widths a build
reports, and a prune step names the units to keep), so none builds its parent again; a cut
that did come back with its parent's sha is not counted in the table and its group is not
proposed again. Probes are ordinary measured trials: stored, cached by artifact sha, replayed
on resume.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from toolkit.errors import ConfigError
from toolkit.search.base import Candidate, CandidateKind, Goal, Strategy, Trial
from toolkit.search.netadapt_table import Observation, observations, saved_per_unit

PROBE_FRACTION = 0.5  # share of a group's units a probe removes
MIN_KEEP_FRACTION = 0.1  # never prune a group below this share of its base width
PROBES = 2  # lookup probes before the first iteration (the groups costing the most MACs)
PROPOSALS = 3  # groups proposed per iteration
TARGET_MARGIN = 0.03  # the last step aims this far below the limit (measurement noise)
MIN_STEP = 0.02  # smallest reduction asked per iteration, as a fraction of the limit


@dataclass(frozen=True)
class _State:
    """Where the greedy walk stands: the kept trial, its prune chain, widths, and scheme."""

    current: Trial
    chain: list[dict[str, Any]]
    widths: dict[str, int]
    scheme: Optional[str]


class NetAdaptSearch(Strategy):
    """Greedy per-group pruning under budgets.

    Args:
        space: the search space; uses its `netadapt_method`, `finetune_epochs`,
            `final_epochs`, `round_to`, its `quantize` choices (iteration 0), and its
            default threads.
        goal: resolved budgets (at least one).
        max_trials: most trials (probes included), the base excluded.
        seed: unused (the strategy is deterministic).
        layers: prunable dependency groups of the base model, {group name: units}.
        iterations: planned iterations from the base to the budget (default 2): each asks
            for 1/iterations of the base's excess over the limit. An iteration none of whose
            proposals reached its target doubles what the next one asks (measurements near a
            runtime's floor save less than the table predicted).
        max_iterations: hard cap on iterations (default 6).
        costs: host-side MACs of one unit of each group (default: all equal).
        probes: lookup probes before the first iteration (default 2).
        proposals: groups proposed per iteration (default 3).
    """

    name = "netadapt"

    def __init__(
        self,
        space: Any,
        goal: Goal,
        max_trials: int,
        seed: int = 0,
        layers: Optional[dict[str, int]] = None,
        iterations: int = 2,
        max_iterations: int = 6,
        costs: Optional[dict[str, float]] = None,
        probes: int = PROBES,
        proposals: int = PROPOSALS,
    ) -> None:
        super().__init__(space, goal, max_trials, seed)
        if not goal.budgeted:
            raise ConfigError(
                "strategy netadapt: needs a budget to reduce; pass --budget or --budget-ratio "
                "(e.g. --budget-ratio latency_p90=0.7), or use --strategy pareto"
            )
        self.layers = dict(layers or {})
        if not self.layers:
            raise ConfigError("strategy netadapt: the model has no prunable group "
                              "(see `edgeloop compress MODEL --list-groups`)")
        self.iterations = max(1, iterations)
        self.max_iterations = max_iterations
        self.costs = {g: float((costs or {}).get(g, 1.0)) for g in self.layers}
        self.round_to = max(1, int(getattr(space, "round_to", 1) or 1))
        self.proposals = max(1, proposals)
        by_total = sorted(self.layers, key=lambda g: -self.costs[g] * self.layers[g])
        self.probed = [g for g in by_total if self._probe_keep(g) is not None][:max(1, probes)]

    # -- the walk, replayed from the history on every call ----------------------------------
    def ask(self, history: Sequence[Trial]) -> list[Candidate]:
        base = next(t for t in history if t.candidate.kind == CandidateKind.BASE)
        if not base.ok or any(m not in base.usage for m in self.goal.budgeted):
            return []
        done = {t.candidate.key: t for t in history}
        steps = {m: max((base.usage[m] - 1.0) / self.iterations, MIN_STEP)
                 for m in self.goal.budgeted}
        stage = self._quantization(history, base, done, steps)
        if isinstance(stage, list):
            return stage
        start, scheme = stage
        if start.feasible:
            return []  # the base, or a quantized base, meets every budget: nothing to prune
        probes = [self._probe(group, scheme) for group in self.probed]
        missing = [c for c in probes if c.key not in done]
        if missing:
            return self._capped(history, missing)
        state = _State(start, [], dict(self.layers), scheme)
        misses = 0
        for iteration in range(1, self.max_iterations + 1):
            metric = self._most_over(state.current)
            if metric is None:
                break
            target = state.current.usage[metric] - steps[metric]
            if target < 1.0:
                target = 1.0 - TARGET_MARGIN
            need = (state.current.usage[metric] - target) * 2**misses
            proposals = self._proposals(history, iteration, state, metric, target, need)
            if not proposals:
                break
            todo = [c for c in proposals if c.key not in done]
            if todo:
                return self._capped(history, todo)
            chosen, reached = _choose([done[c.key] for c in proposals], metric, target)
            if chosen is None:
                break
            misses = 0 if reached else misses + 1
            state = self._advance(state, chosen)
        if not state.chain or self._most_over(state.current) is not None:
            return []
        if self.space.final_epochs < 1:  # no longer fine-tune asked: the last choice stands
            return []
        final = self._candidate(
            state.chain + [{"finetune": {"epochs": self.space.final_epochs}}],
            CandidateKind.FINAL,
            {"chain": state.chain, "widths": state.widths, "iteration": "final",
             "quantize": scheme},
            "netadapt: longer fine-tune of the chosen model",
            scheme,
        )
        return [] if final.key in done else self._capped(history, [final])

    def _most_over(self, trial: Trial) -> Optional[str]:
        """The budgeted metric furthest over its limit; None when every one holds."""
        over = {m: trial.usage.get(m, math.inf) for m in self.goal.budgeted}
        over = {m: u for m, u in over.items() if u > 1.0}
        return max(over, key=lambda m: over[m]) if over else None

    def _quantization(self, history: Sequence[Trial], base: Trial, done: dict[str, Trial],
                      steps: dict[str, float]) -> Any:
        """Iteration 0: the space's quantization schemes applied to the base model.

        Returns the candidates still to run, or (the trial to prune from, its scheme): a
        scheme meeting every budget, else the most accurate scheme that cut the base's
        most-over metric by at least one step, else the base itself.
        """
        schemes = [s for s in self.space.choices("quantize") if s]
        proposals = [
            self._candidate([], CandidateKind.TRIAL, {"iteration": 0, "quantize": s},
                            f"netadapt iteration 0: {s}", s)
            for s in schemes
        ]
        todo = [c for c in proposals if c.key not in done]
        if todo:
            return self._capped(history, todo)
        trials = [done[c.key] for c in proposals]
        fits = [t for t in trials if t.feasible]
        if fits:
            best = max(fits, key=lambda t: t.accuracy_pct)
            return best, best.candidate.params["quantize"]
        metric = self._most_over(base)
        if metric is None:
            return base, None
        cut = [t for t in trials if t.judged
               and t.usage.get(metric, math.inf) <= base.usage[metric] - steps[metric]]
        if not cut:
            return base, None
        best = max(cut, key=lambda t: (t.accuracy_pct, -t.usage[metric]))
        return best, best.candidate.params["quantize"]

    def _advance(self, state: _State, chosen: Trial) -> _State:
        params = chosen.candidate.params
        measured = chosen.info.get("widths") or {}
        widths = measured if set(measured) == set(self.layers) else params["widths"]
        return _State(chosen, params["chain"], dict(widths), state.scheme)

    # -- proposals --------------------------------------------------------------------------
    def _proposals(self, history: Sequence[Trial], iteration: int, state: _State, metric: str,
                   target: float, need: float) -> list[Candidate]:
        """Candidates cutting one group each, just enough to save `need` (usage of `metric`)
        by the table's estimate: the `proposals` groups that get there with the smallest share
        of their width cut (or, when none can, that save the most)."""
        seen = self._observations(history, iteration, state.scheme, metric)
        stuck = self._stuck(history)
        saving = {g: saved_per_unit(g, seen, self.costs) for g in state.widths}
        floors = {g: self._floor(g) for g in state.widths if g in self.layers}
        # Groups whose measured cuts saved nothing are left alone while another group that
        # can still shrink helps; once those are at their floor, the others get their turn.
        helps = any(saving[g] > 0 and width > floors[g] and g not in stuck
                    for g, width in state.widths.items() if g in floors)
        ranked = []
        for group, width in state.widths.items():
            if group not in floors or group in stuck or width <= floors[group]:
                continue
            floor, cost = floors[group], saving[group]
            if helps and cost <= 0:
                continue
            remove = width - floor if cost <= 0 else math.ceil(need / cost)
            keep = self._snap(width - min(max(1, remove), width - floor), width, floor)
            if keep is None:
                continue
            reaches = cost > 0 and (width - keep) * cost >= need * 0.999
            share = (width - keep) / width
            ranked.append(((not reaches, share if reaches else -(width - keep) * cost),
                           group, width, keep))
        out = []
        for _, group, width, keep in sorted(ranked)[: self.proposals]:
            prune = {"prune": self._prune_params({group: keep})}
            tune = [{"finetune": {"epochs": self.space.finetune_epochs}}] \
                if self.space.finetune_epochs > 0 else []  # 0: proposals are not fine-tuned
            chain = state.chain + [prune, *tune]
            params = {"iteration": iteration, "layer": group, "keep": keep, "chain": chain,
                      "widths": dict(state.widths, **{group: keep}), "quantize": state.scheme,
                      "metric": metric, "target_usage": round(target, 4),
                      "parent_usage": dict(state.current.usage), "parent_width": width,
                      "parent_sha": state.current.sha256}
            note = f"netadapt iteration {iteration}: {group} {width}->{keep}"
            out.append(self._candidate(chain, CandidateKind.TRIAL, params, note, state.scheme))
        return out

    def _observations(self, history: Sequence[Trial], iteration: int, scheme: Optional[str],
                      metric: str) -> list[Observation]:
        by_key = {t.candidate.key: t for t in history}
        probes = {}
        for group in self.probed:
            trial = by_key.get(self._probe(group, scheme).key)
            if trial is not None:
                probes[group] = (trial, self.layers[group] - self._probe_keep(group))
        return observations(history, iteration, metric, self._origin(history, scheme), probes)

    def _stuck(self, history: Sequence[Trial]) -> set[str]:
        """Groups a cut of which came back as its parent's artifact (same sha)."""
        origins = {t.sha256 for t in history if t.candidate.kind == CandidateKind.BASE
                   or t.candidate.params.get("iteration") == 0}
        stuck = set()
        for t in history:
            p = t.candidate.params
            if not t.ok or not t.sha256:
                continue
            if "probe" in p and t.sha256 in origins:
                stuck.add(p["probe"])
            if "layer" in p and p.get("parent_sha") == t.sha256:
                stuck.add(p["layer"])
        return stuck

    def _floor(self, group: str) -> int:
        floor = max(1, math.ceil(self.layers[group] * MIN_KEEP_FRACTION))
        r = self.round_to
        return -(-floor // r) * r if self.layers[group] >= r > 1 else floor

    def _snap(self, keep: int, width: int, floor: int) -> Optional[int]:
        """`keep` rounded down to a multiple of `round_to` (groups at least that wide), below
        `width` and not under `floor`; None when no such width exists."""
        r = self.round_to
        if r > 1 and width >= r:
            keep = (keep // r) * r
        keep = max(keep, floor)
        return keep if keep < width else None

    def _origin(self, history: Sequence[Trial], scheme: Optional[str]) -> Optional[Trial]:
        """The unpruned model the probes were cut from (the base, or the base + scheme)."""
        if scheme is None:
            return next(t for t in history if t.candidate.kind == CandidateKind.BASE)
        key = self._candidate([], CandidateKind.TRIAL, {}, "", scheme).key
        return next((t for t in history if t.candidate.key == key), None)

    def _probe_keep(self, group: str) -> Optional[int]:
        width = self.layers[group]
        return self._snap(width - max(1, round(width * PROBE_FRACTION)), width, 1)

    def _probe(self, group: str, scheme: Optional[str]) -> Candidate:
        keep = self._probe_keep(group)
        recipe = [{"prune": self._prune_params({group: keep})}]
        params = {"probe": group, "keep": keep, "quantize": scheme}
        note = f"netadapt lookup: {group} {self.layers[group]}->{keep}"
        return self._candidate(recipe, CandidateKind.PROBE, params, note, scheme)

    def _prune_params(self, keep: dict[str, int]) -> dict[str, Any]:
        """A structured prune step leaving exactly `keep[group]` units in each named group."""
        params: dict[str, Any] = {"method": self.space.netadapt_method, "keep": dict(keep)}
        if self.round_to > 1:
            params["round_to"] = self.round_to
        return params

    def _candidate(self, chain: list[dict[str, Any]], kind: CandidateKind,
                   params: dict[str, Any], note: str, scheme: Optional[str]) -> Candidate:
        """The chain, then the scheme's quantize step; the space's default threads."""
        suffix = self.space.recipe({"quantize": scheme}) if scheme else []
        threads = self.space.default("threads")
        return Candidate(
            recipe=list(chain) + suffix,
            threads=int(threads) if threads is not None else 0,
            params=params,
            kind=kind,
            note=note + (f" + {scheme}" if scheme and not note.endswith(scheme) else ""),
        )

    def _capped(self, history: Sequence[Trial], batch: list[Candidate]) -> list[Candidate]:
        return batch[: self.remaining(history)]


def _choose(trials: list[Trial], metric: str, target: float) -> tuple[Optional[Trial], bool]:
    """(the kept proposal, whether it reached the target).

    Reaching means: at or under the budget on the last step (target below the limit), else
    within a quarter of the asked reduction above the target (measurement noise). The most
    accurate proposal that reached it is kept; when none did, the one that came closest.
    """
    usable = [t for t in trials if t.judged and metric in t.usage
              and t.sha256 != t.candidate.params.get("parent_sha")]
    if not usable:
        return None, False
    asked = max(t.candidate.params.get("parent_usage", {}).get(metric, 0.0) for t in usable)
    bar = 1.0 if target < 1.0 else target + 0.25 * max(asked - target, 0.0)
    reached = [t for t in usable if t.usage[metric] <= bar]
    if reached:
        return max(reached, key=lambda t: (t.accuracy_pct, -t.usage[metric])), True
    return min(usable, key=lambda t: t.usage[metric]), False

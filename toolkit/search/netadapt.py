"""NetAdapt-style greedy channel pruning steered by on-device measurements (Yang et al., 2018).

Each iteration asks for a fixed reduction of one measured metric: the budgeted metric the
current model is furthest over (p90 latency, memory, energy or size; worst case over devices,
as a fraction of each device's limit). For every prunable layer it proposes the current model
with just enough of that layer's channels removed to reach the reduction, fine-tunes each
proposal briefly, measures it on the devices, and keeps the most accurate one that reached the
target. It stops when every budget holds, then fine-tunes the chosen model longer.

Iteration 0 tries the space's quantization schemes on the base model: a scheme that meets every
budget alone ends the search; otherwise the most accurate scheme that cut the metric by a step
is kept, and the pruning that follows is measured with it.

How many channels are "just enough" comes from a per-layer lookup table built from real
measurements on the devices: first one probe per layer (the unpruned model with half of that
layer's channels removed, no fine-tune: a structured prune's latency does not depend on the
weight values), then every measured proposal adds what it saved per channel; the table pools
them (total saved / channels removed), which damps single-measurement noise. A layer whose
cuts saved nothing is not proposed while another layer's did. Probes are ordinary measured
trials: stored, cached by artifact sha, replayed on resume.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from toolkit.errors import ConfigError
from toolkit.search.base import Candidate, CandidateKind, Goal, Strategy, Trial
from toolkit.search.netadapt_table import saved_per_channel

PROBE_FRACTION = 0.5  # share of a layer's channels a probe removes
MIN_KEEP_FRACTION = 0.1  # never prune a layer below this share of its base width
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
    """Greedy per-layer pruning under budgets.

    Args:
        space: the search space; uses its `netadapt_method`, `finetune_epochs`,
            `final_epochs`, its `quantize` choices (iteration 0), and its default threads.
        goal: resolved budgets (at least one).
        max_trials: most trials (probes included), the base excluded.
        seed: unused (the strategy is deterministic).
        layers: prunable layers of the base model, {module name: output channels}.
        iterations: planned iterations from the base to the budget (default 2): each asks
            for 1/iterations of the base's excess over the limit. An iteration none of whose
            proposals reached its target doubles what the next one asks (measurements near a
            runtime's floor save less than the table predicted).
        max_iterations: hard cap on iterations (default 6).
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
    ) -> None:
        super().__init__(space, goal, max_trials, seed)
        if not goal.budgeted:
            raise ConfigError(
                "strategy netadapt: needs a budget to reduce; pass --budget or --budget-ratio "
                "(e.g. --budget-ratio latency_p90=0.7), or use --strategy pareto"
            )
        self.layers = dict(layers or {})
        if not self.layers:
            raise ConfigError("strategy netadapt: the model has no prunable Conv/Linear layer")
        self.iterations = max(1, iterations)
        self.max_iterations = max_iterations

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
        probes = [self._probe(layer, scheme) for layer in self.layers]
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
        """One candidate per layer that can still shrink: just enough channels removed to
        save `need` (usage of `metric`) by the table's estimate."""
        saving = {layer: self._saved_per_channel(history, layer, iteration, state.scheme, metric)
                  for layer in state.widths}
        floors = {layer: max(1, math.ceil(self.layers[layer] * MIN_KEEP_FRACTION))
                  for layer in state.widths}
        # Layers whose measured cuts saved nothing are left alone while another layer that can
        # still shrink helps; once those are at their floor, the others get their turn.
        helps = any(saving[layer] > 0 and width > floors[layer]
                    for layer, width in state.widths.items())
        out = []
        for layer, width in state.widths.items():
            floor = floors[layer]
            cost = saving[layer]
            if width <= floor or (helps and cost <= 0):
                continue
            remove = width - floor if cost <= 0 else math.ceil(need / cost)
            remove = min(max(1, remove), width - floor)
            keep = width - remove
            prune = {"prune": _prune_params(self.space.netadapt_method, state.widths,
                                            {layer: keep})}
            chain = state.chain + [prune, {"finetune": {"epochs": self.space.finetune_epochs}}]
            params = {"iteration": iteration, "layer": layer, "keep": keep, "chain": chain,
                      "widths": dict(state.widths, **{layer: keep}), "quantize": state.scheme,
                      "metric": metric, "target_usage": round(target, 4),
                      "parent_usage": dict(state.current.usage), "parent_width": width}
            note = f"netadapt iteration {iteration}: {layer} {width}->{keep} channels"
            out.append(self._candidate(chain, CandidateKind.TRIAL, params, note, state.scheme))
        return out

    def _saved_per_channel(self, history: Sequence[Trial], layer: str, iteration: int,
                           scheme: Optional[str], metric: str) -> float:
        by_key = {t.candidate.key: t for t in history}
        probe = by_key.get(self._probe(layer, scheme).key)
        return saved_per_channel(history, layer, iteration, metric,
                                 self._origin(history, scheme), probe,
                                 self.layers[layer] - self._probe_keep(layer))

    def _origin(self, history: Sequence[Trial], scheme: Optional[str]) -> Optional[Trial]:
        """The unpruned model the probes were cut from (the base, or the base + scheme)."""
        if scheme is None:
            return next(t for t in history if t.candidate.kind == CandidateKind.BASE)
        key = self._candidate([], CandidateKind.TRIAL, {}, "", scheme).key
        return next((t for t in history if t.candidate.key == key), None)

    def _probe_keep(self, layer: str) -> int:
        width = self.layers[layer]
        return max(1, width - max(1, round(width * PROBE_FRACTION)))

    def _probe(self, layer: str, scheme: Optional[str]) -> Candidate:
        keep = self._probe_keep(layer)
        recipe = [{"prune": _prune_params(self.space.netadapt_method, self.layers, {layer: keep})}]
        params = {"probe": layer, "keep": keep, "quantize": scheme}
        note = f"netadapt lookup: {layer} {self.layers[layer]}->{keep} channels"
        return self._candidate(recipe, CandidateKind.PROBE, params, note, scheme)

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


def _prune_params(method: str, widths: dict[str, int], keep: dict[str, int]) -> dict[str, Any]:
    """A structured prune step leaving exactly `keep[layer]` channels in each named layer.

    Torch-Pruning keeps int(width * (1 - amount)) channels, so the amount aims half a
    channel above the wanted count; layers not named get amount 0.
    """
    per_layer = {
        layer: (round(1.0 - (keep[layer] + 0.5) / width, 6) if layer in keep else 0.0)
        for layer, width in widths.items()
    }
    return {"method": method, "amount": 0.5, "per_layer": per_layer}


def _choose(trials: list[Trial], metric: str, target: float) -> tuple[Optional[Trial], bool]:
    """(the kept proposal, whether it reached the target).

    Reaching means: at or under the budget on the last step (target below the limit), else
    within a quarter of the asked reduction above the target (measurement noise). The most
    accurate proposal that reached it is kept; when none did, the one that came closest.
    """
    usable = [t for t in trials if t.judged and metric in t.usage]
    if not usable:
        return None, False
    asked = max(t.candidate.params.get("parent_usage", {}).get(metric, 0.0) for t in usable)
    bar = 1.0 if target < 1.0 else target + 0.25 * max(asked - target, 0.0)
    reached = [t for t in usable if t.usage[metric] <= bar]
    if reached:
        return max(reached, key=lambda t: (t.accuracy_pct, -t.usage[metric])), True
    return min(usable, key=lambda t: t.usage[metric]), False

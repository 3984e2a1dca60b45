"""NetAdapt-style greedy channel pruning steered by on-device measurements (Yang et al., 2018).

Each iteration asks for a fixed reduction of the budgeted metric (p90 latency first), worst
case over devices as a fraction of each device's limit. For every prunable layer it proposes
the current model with just enough of that layer's channels removed to reach the reduction,
fine-tunes each proposal briefly, measures it on the devices, and keeps the most accurate one
that reached the target. It stops when the budget holds, then fine-tunes the chosen model longer.

How many channels are "just enough" comes from a per-layer lookup table built from real
measurements on the devices: first one probe per layer (the base with half of that layer's
channels removed, no fine-tune; a structured prune's latency does not depend on the weight
values), then every measured proposal adds the cost per channel it observed. Probes are
ordinary measured trials, so they are stored, cached by artifact sha, and replayed on resume.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Optional

from toolkit.errors import ConfigError
from toolkit.search.base import Candidate, CandidateKind, Goal, Strategy, Trial

PROBE_FRACTION = 0.5  # share of a layer's channels a probe removes
MIN_KEEP_FRACTION = 0.1  # never prune a layer below this share of its base width
TARGET_MARGIN = 0.03  # the last step aims this far below the limit (measurement noise)


class NetAdaptSearch(Strategy):
    """Greedy per-layer pruning under a budget.

    Args:
        space: the search space; uses its `netadapt_method`, `finetune_epochs`,
            `final_epochs`, and the default (first) choice of its other dimensions.
        goal: resolved budgets; `goal.primary` is the metric reduced.
        max_trials: most trials (probes included), the base excluded.
        seed: unused (the strategy is deterministic).
        layers: prunable layers of the base model, {module name: output channels}.
        iterations: planned iterations to go from the base to the budget (default 3).
        max_iterations: hard cap on iterations (default 10).
    """

    name = "netadapt"

    def __init__(
        self,
        space: Any,
        goal: Goal,
        max_trials: int,
        seed: int = 0,
        layers: Optional[dict[str, int]] = None,
        iterations: int = 3,
        max_iterations: int = 10,
    ) -> None:
        super().__init__(space, goal, max_trials, seed)
        if goal.primary is None:
            raise ConfigError(
                "strategy netadapt: needs a budget to reduce; pass --budget or --budget-ratio "
                "(e.g. --budget-ratio latency_p90=0.7)"
            )
        self.layers = dict(layers or {})
        if not self.layers:
            raise ConfigError("strategy netadapt: the model has no prunable Conv/Linear layer")
        self.iterations = max(1, iterations)
        self.max_iterations = max_iterations

    # -- the loop, replayed from the history on every call ----------------------------------
    def ask(self, history: Sequence[Trial]) -> list[Candidate]:
        base = next(t for t in history if t.candidate.kind == CandidateKind.BASE)
        primary = self.goal.primary
        if not base.ok or primary not in base.usage:
            return []
        missing = [self._probe(layer) for layer in self.layers]
        done = {t.candidate.key: t for t in history}
        missing = [c for c in missing if c.key not in done]
        if missing:
            return self._capped(history, missing)
        step = max((base.usage[primary] - 1.0) / self.iterations, 0.02)
        current, chain, widths = base, [], dict(self.layers)
        for iteration in range(1, self.max_iterations + 1):
            if _meets(current, primary):
                break
            target = current.usage[primary] - step
            if target < 1.0:
                target = 1.0 - TARGET_MARGIN
            proposals = self._proposals(history, iteration, current, chain, widths, target)
            if not proposals:
                break
            todo = [c for c in proposals if c.key not in done]
            if todo:
                return self._capped(history, todo)
            trials = [done[c.key] for c in proposals]
            chosen = _choose(trials, primary, target, step)
            if chosen is None:
                break
            current, chain = chosen, chosen.candidate.params["chain"]
            widths = dict(chosen.info.get("widths") or chosen.candidate.params["widths"])
        if current is base or not _meets(current, primary):
            return []
        final = self._candidate(
            chain + [{"finetune": {"epochs": self.space.final_epochs}}],
            CandidateKind.FINAL,
            {"chain": chain, "widths": widths, "iteration": "final"},
            "netadapt: longer fine-tune of the chosen model",
        )
        return [] if final.key in done else self._capped(history, [final])

    # -- proposals --------------------------------------------------------------------------
    def _proposals(
        self,
        history: Sequence[Trial],
        iteration: int,
        current: Trial,
        chain: list[dict[str, Any]],
        widths: dict[str, int],
        target: float,
    ) -> list[Candidate]:
        """One candidate per layer that can still shrink: just enough channels removed."""
        primary = self.goal.primary
        need = current.usage[primary] - target
        out = []
        for layer, width in widths.items():
            floor = max(1, math.ceil(self.layers[layer] * MIN_KEEP_FRACTION))
            if width <= floor:
                continue
            cost = self._cost_per_channel(history, layer, iteration)
            remove = width - floor if cost <= 0 else math.ceil(need / cost)
            remove = min(max(1, remove), width - floor)
            keep = width - remove
            step = {"prune": _prune_params(self.space.netadapt_method, widths, {layer: keep})}
            new_chain = chain + [step, {"finetune": {"epochs": self.space.finetune_epochs}}]
            new_widths = dict(widths, **{layer: keep})
            params = {"iteration": iteration, "layer": layer, "keep": keep, "chain": new_chain,
                      "widths": new_widths, "target_usage": round(target, 4),
                      "parent_usage": current.usage[primary], "parent_width": width}
            note = f"netadapt iteration {iteration}: {layer} {width}->{keep} channels"
            out.append(self._candidate(new_chain, CandidateKind.TRIAL, params, note))
        return out

    def _cost_per_channel(self, history: Sequence[Trial], layer: str, iteration: int) -> float:
        """Primary-usage saved per channel of `layer`: the latest real observation.

        Observations come from the probe and from earlier iterations' proposals for this layer
        (each measured against the model it was cut from). Non-positive observations (noise)
        fall back to the probe; a non-positive probe means "prune as far as allowed".
        """
        primary = self.goal.primary
        by_key = {t.candidate.key: t for t in history}
        observed: list[float] = []
        probe = by_key.get(self._probe(layer).key)
        base = next(t for t in history if t.candidate.kind == CandidateKind.BASE)
        if probe is not None and probe.ok and primary in probe.usage:
            removed = self.layers[layer] - self._probe_keep(layer)
            observed.append((base.usage[primary] - probe.usage[primary]) / removed)
        for trial in history:
            p = trial.candidate.params
            if p.get("layer") != layer or not isinstance(p.get("iteration"), int):
                continue
            if p["iteration"] >= iteration or not trial.ok or primary not in trial.usage:
                continue
            parent_usage, parent_width = p.get("parent_usage"), p.get("parent_width")
            if parent_usage is None or not parent_width or parent_width <= p["keep"]:
                continue
            observed.append((parent_usage - trial.usage[primary]) / (parent_width - p["keep"]))
        positive = [o for o in observed if o > 0]
        return positive[-1] if positive else 0.0

    def _probe_keep(self, layer: str) -> int:
        width = self.layers[layer]
        return max(1, width - max(1, round(width * PROBE_FRACTION)))

    def _probe(self, layer: str) -> Candidate:
        keep = self._probe_keep(layer)
        recipe = [{"prune": _prune_params(self.space.netadapt_method, self.layers, {layer: keep})}]
        params = {"probe": layer, "keep": keep}
        note = f"netadapt lookup: {layer} {self.layers[layer]}->{keep} channels"
        return self._candidate(recipe, CandidateKind.PROBE, params, note)

    def _candidate(
        self, chain: list[dict[str, Any]], kind: CandidateKind, params: dict[str, Any], note: str
    ) -> Candidate:
        """The chain plus the space's default suffix (quantize, cluster) and threads."""
        suffix = self.space.recipe(
            {"quantize": self.space.default("quantize"), "cluster": self.space.default("cluster")}
        )
        threads = self.space.default("threads")
        return Candidate(
            recipe=list(chain) + suffix,
            threads=int(threads) if threads is not None else 0,
            params=params,
            kind=kind,
            note=note,
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


def _meets(trial: Trial, primary: str) -> bool:
    return trial.ok and trial.usage.get(primary, math.inf) <= 1.0


def _choose(trials: list[Trial], primary: str, target: float, step: float) -> Optional[Trial]:
    """The most accurate proposal that reached the target (within a quarter step of noise);
    when none did, the one that came closest."""
    usable = [t for t in trials if t.judged and primary in t.usage]
    if not usable:
        return None
    reached = [t for t in usable if t.usage[primary] <= target + 0.25 * step]
    if reached:
        return max(reached, key=lambda t: (t.accuracy_pct, -t.usage[primary]))
    return min(usable, key=lambda t: t.usage[primary])


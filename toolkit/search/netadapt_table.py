"""NetAdapt's lookup table: what one unit (channel, or head) of a dependency group costs on
the devices, from real measurements.

Observations of a group are its lookup probe (the unpruned model with part of that group cut,
no fine-tune: a structured prune's latency does not depend on the weight values) and every
earlier proposal that cut it (against the model it was cut from). A group's own observations
are pooled — total saved / total units removed — which damps the noise of one measurement.
A group not observed yet is estimated from all observations through the host-side MACs one of
its units costs (saved per MAC removed, times its MACs per unit), so a model with dozens of
groups needs only a few lookups before the first proposals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from toolkit.search.base import Trial


@dataclass(frozen=True)
class Observation:
    """One measured cut: `removed` units of `group` saved `saved` usage of a metric."""

    group: str
    removed: int
    saved: float


def observations(history: Sequence[Trial], iteration: int, metric: str,
                 origin: Optional[Trial], probes: dict[str, tuple[Trial, int]]
                 ) -> list[Observation]:
    """Every measured cut usable by `iteration`: the probes (against `origin`, the unpruned
    model they were cut from) and the proposals of earlier iterations (against their parent).

    Args:
        history: every trial so far.
        iteration: the iteration asking; only proposals of earlier iterations count.
        metric: the budgeted metric, e.g. `latency_p90_ms`.
        origin: the unpruned model the probes were cut from (None: not measured).
        probes: {group: (its probe trial, units the probe removed)} for measured probes.
    """
    out = []
    if origin is not None and origin.ok and metric in origin.usage:
        for group, (probe, removed) in probes.items():
            if probe.ok and metric in probe.usage and probe.sha256 != origin.sha256:
                out.append(Observation(group, removed, origin.usage[metric] - probe.usage[metric]))
    for trial in history:
        p = trial.candidate.params
        if not isinstance(p.get("iteration"), int) or "layer" not in p:
            continue
        if p["iteration"] >= iteration or not trial.ok or metric not in trial.usage:
            continue
        parent = (p.get("parent_usage") or {}).get(metric)
        if parent is None or p.get("parent_width", 0) <= p["keep"]:
            continue
        if p.get("parent_sha") and p["parent_sha"] == trial.sha256:
            continue  # built the parent again: says nothing about the cut
        out.append(Observation(p["layer"], p["parent_width"] - p["keep"],
                               parent - trial.usage[metric]))
    return out


def saved_per_unit(group: str, seen: Sequence[Observation], costs: dict[str, float]) -> float:
    """Usage of the metric (value / limit, worst device) one unit of `group` saves.

    The group's own observations pooled when it has any; otherwise the pooled saving per MAC
    of every observation times the group's MACs per unit. 0 when nothing was observed.
    """
    own = [o for o in seen if o.group == group]
    if own:
        removed = sum(o.removed for o in own)
        return sum(o.saved for o in own) / removed if removed else 0.0
    macs = sum(o.removed * costs.get(o.group, 1.0) for o in seen)
    if not macs:
        return 0.0
    return sum(o.saved for o in seen) / macs * costs.get(group, 1.0)

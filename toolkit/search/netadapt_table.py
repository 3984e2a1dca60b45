"""NetAdapt's lookup table: what one channel of a layer costs on the devices, from real
measurements.

Observations of a layer are its probe (the unpruned model with part of that layer's channels
removed, no fine-tune: a structured prune's latency does not depend on the weight values) and
every earlier proposal that cut that layer (against the model it was cut from). The table pools
them — total saved / total channels removed — which damps the noise of a single measurement.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from toolkit.search.base import Trial


def saved_per_channel(
    history: Sequence[Trial],
    layer: str,
    iteration: int,
    metric: str,
    origin: Optional[Trial],
    probe: Optional[Trial],
    probe_removed: int,
) -> float:
    """Usage of `metric` (value / limit, worst device) saved per channel removed from `layer`.

    Args:
        history: every trial so far.
        layer: the layer's module name.
        iteration: the iteration asking; only proposals of earlier iterations count.
        metric: the budgeted metric, e.g. `latency_p90_ms`.
        origin: the unpruned model the probe was cut from (None: not measured).
        probe: the layer's probe trial (None: not measured).
        probe_removed: channels the probe removed.

    Returns:
        The pooled saving per channel; 0 when nothing was observed (or nothing was saved).
    """
    saved, removed = 0.0, 0
    if (probe is not None and origin is not None and probe.ok
            and metric in probe.usage and metric in origin.usage):
        saved += origin.usage[metric] - probe.usage[metric]
        removed += probe_removed
    for trial in history:
        p = trial.candidate.params
        if p.get("layer") != layer or not isinstance(p.get("iteration"), int):
            continue
        if p["iteration"] >= iteration or not trial.ok or metric not in trial.usage:
            continue
        parent = (p.get("parent_usage") or {}).get(metric)
        if parent is None or p.get("parent_width", 0) <= p["keep"]:
            continue
        saved += parent - trial.usage[metric]
        removed += p["parent_width"] - p["keep"]
    return saved / removed if removed else 0.0

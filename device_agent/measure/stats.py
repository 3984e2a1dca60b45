"""Latency statistics built in one place from the raw samples."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from device_agent.protocol import edgeloop_pb2 as pb

HIGH_CV = 0.05
"""Coefficient of variation above which a result carries a warning."""


def latency_from_samples(samples_ms: Sequence[float], keep: int = 0) -> pb.LatencyStats:
    """Summarises timed runs (milliseconds).

    Args:
        samples_ms: one latency per timed run, in ms; at least one.
        keep: how many raw samples to keep in the message (0: all), evenly spaced.
    """
    if len(samples_ms) == 0:
        raise ValueError("no latency samples to summarise")
    a = np.asarray(samples_ms, dtype=np.float64)
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    p50, p90, p95, p99 = (float(v) for v in np.percentile(a, [50, 90, 95, 99]))
    kept = a if keep <= 0 or keep >= a.size else a[np.linspace(0, a.size - 1, keep).astype(int)]
    return pb.LatencyStats(
        n=int(a.size),
        mean_ms=mean,
        std_ms=std,
        cv=std / mean if mean > 0 else 0.0,
        min_ms=float(a.min()),
        p50_ms=p50,
        p90_ms=p90,
        p95_ms=p95,
        p99_ms=p99,
        max_ms=float(a.max()),
        samples_ms=[float(v) for v in kept],
    )

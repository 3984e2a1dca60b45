"""Measuring two models in interleaved rounds on one device (the A/B design of `ab.py`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from toolkit.errors import AgentError
from toolkit.measurement import BenchmarkOptions, Measurement
from toolkit.stats.ab import ABComparison, compare_rounds, interleaved_order

OnMeasurement = Callable[[str, int, Measurement], None]
"""Called with ("a" or "b", round index, measurement) as each measurement arrives."""


@dataclass(frozen=True)
class ABRun:
    """The measurements of both models, round by round, and what they say."""

    a: tuple[Measurement, ...]
    b: tuple[Measurement, ...]
    comparison: ABComparison


def run_interleaved(
    client: Any,
    a_sha: str,
    b_sha: str,
    rounds: int,
    options: Optional[BenchmarkOptions] = None,
    names: tuple[str, str] = ("A", "B"),
    on_measurement: Optional[OnMeasurement] = None,
    seed: int = 0,
) -> ABRun:
    """Benchmarks A and B (already on the device) in `rounds` interleaved rounds, each a fresh
    benchmark child, and compares their raw samples (`compare_rounds`).

    Args:
        client: a connected DeviceClient.
        a_sha, b_sha: the models' sha256 (push them first).
        rounds: rounds; each runs A once and B once, in the order A B, B A, A B, ...
        options: benchmark options for both (the same for A and B).
        names: how A and B are called in messages and stored rows.
        on_measurement: receives each measurement as it arrives (to store it: nothing is lost
            when a later round fails).
        seed: the bootstrap's seed.

    Raises:
        AgentError: a benchmark failed on the device (its kind and message, which round), or
            came back without raw samples.
    """
    options = options or BenchmarkOptions()
    runs: dict[str, list[Measurement]] = {"a": [], "b": []}
    shas = {"a": a_sha, "b": b_sha}
    labels = {"a": names[0], "b": names[1]}
    for r, which in interleaved_order(rounds):
        m = client.benchmark(shas[which], options, name=labels[which])
        if on_measurement is not None:
            on_measurement(which, r, m)
        if not m.ok:
            raise AgentError(f"device {client.name}: {labels[which]}: benchmark failed in round "
                             f"{r + 1} of {rounds} ({m.error_kind}): {m.error_message}")
        if m.latency is None or not m.latency.samples_ms:
            raise AgentError(f"device {client.name}: {labels[which]}: no raw latency samples "
                             "came back (options.keep_samples)")
        runs[which].append(m)
    comparison = compare_rounds([m.latency.samples_ms for m in runs["a"]],
                                [m.latency.samples_ms for m in runs["b"]], seed=seed)
    return ABRun(tuple(runs["a"]), tuple(runs["b"]), comparison)

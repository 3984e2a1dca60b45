"""Benchmark options: defaults and allowed ranges, each stated once (0 / empty on the wire
means "default").

Both sides use this module: the agent refuses a request whose options are out of range
(INVALID_ARGUMENT, before it is queued), and the host imports the same `RANGES` and
`validate` so it refuses them before it pushes anything.
"""

from __future__ import annotations

import math

from device_agent.protocol import edgeloop_pb2 as pb

DEFAULTS = pb.BenchmarkOptions(
    warmup_runs=5,
    warmup_min_seconds=0.2,
    min_runs=20,
    min_seconds=1.0,
    timeout_seconds=300.0,
    idle_seconds=0.5,
    keep_samples=10_000,
    start_temp_timeout_s=300.0,
)

MAX_KEEP_SAMPLES = 100_000
"""Raw samples returned at most (800 KB of doubles in the result; 4,000,000 took the agent
from 97 MB to 361 MB RSS)."""
MAX_CPUS = 1024
"""CPU numbers in `cpu_affinity` are below this; the list holds at most this many."""
MAX_TIMEOUT_S = 86_400.0
"""One day: a benchmark is one child process, killed at its timeout."""

RANGES: dict[str, tuple[float, float]] = {
    "threads": (0, 1024),
    "warmup_runs": (0, 1_000_000),
    "warmup_min_seconds": (0.0, 3_600.0),
    "min_runs": (0, 10_000_000),
    "min_seconds": (0.0, MAX_TIMEOUT_S),
    "max_runs": (0, 100_000_000),
    "timeout_seconds": (0.0, MAX_TIMEOUT_S),
    "idle_seconds": (0.0, 600.0),
    "tflm_arena_bytes": (0, 2**31),
    "keep_samples": (0, MAX_KEEP_SAMPLES),
    "cooldown_s": (0.0, 3_600.0),
    "max_start_temp_c": (0.0, 150.0),
    "start_temp_timeout_s": (0.0, 3_600.0),
}
"""Allowed closed range [low, high] of each numeric option; 0 is "default" where it has one."""

ACCELERATORS = ("", "cpu", "cuda")


def with_defaults(options: pb.BenchmarkOptions) -> pb.BenchmarkOptions:
    """Returns a copy of `options` with every unset (zero) numeric field set to its default."""
    filled = pb.BenchmarkOptions()
    filled.CopyFrom(options)
    for field in DEFAULTS.DESCRIPTOR.fields:
        default = getattr(DEFAULTS, field.name)
        if default and not getattr(filled, field.name):
            setattr(filled, field.name, default)
    return filled


def validate(options: pb.BenchmarkOptions) -> str:
    """Returns why the options are unusable, or "" when they are fine.

    Each numeric field must be a finite number within its `RANGES` entry; the message names
    the field, the allowed range and the value, e.g.
    ``options.timeout_seconds: expected a finite number in [0, 86400], got nan``.
    """
    for name, (low, high) in RANGES.items():
        value = getattr(options, name)
        kind = "a finite number" if isinstance(value, float) else "an integer"
        if not (math.isfinite(value) and low <= value <= high):
            return (
                f"options.{name}: expected {kind} in [{_text(low)}, {_text(high)}], "
                f"got {_text(value)}"
            )
    if options.max_runs and options.max_runs < options.min_runs:
        return (
            f"options.max_runs ({options.max_runs}) is below options.min_runs ({options.min_runs})"
        )
    if options.accelerator not in ACCELERATORS:
        return f"options.accelerator: expected 'cpu' or 'cuda', got {options.accelerator!r}"
    if len(options.cpu_affinity) > MAX_CPUS or any(
        not 0 <= cpu < MAX_CPUS for cpu in options.cpu_affinity
    ):
        return (
            f"options.cpu_affinity: expected at most {MAX_CPUS} CPU numbers in "
            f"[0, {MAX_CPUS - 1}], got {list(options.cpu_affinity)[:8]}"
        )
    if options.inputs_sha256 and not _is_sha256(options.inputs_sha256):
        return (f"options.inputs_sha256: expected 64 lowercase hex digits (a pushed .npz), "
                f"got {options.inputs_sha256[:80]!r}")
    return ""


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _text(x: float) -> str:
    """86400.0 -> "86400", 0.25 -> "0.25", nan -> "nan"."""
    if math.isfinite(x) and float(x).is_integer():
        return str(int(x))
    return f"{x:g}"

"""Benchmark option defaults, filled in one place (0 / empty on the wire means "default")."""

from __future__ import annotations

from device_agent.protocol import edgeloop_pb2 as pb

DEFAULTS = pb.BenchmarkOptions(
    warmup_runs=5,
    warmup_min_seconds=0.2,
    min_runs=20,
    min_seconds=1.0,
    timeout_seconds=300.0,
    idle_seconds=0.5,
    keep_samples=10_000,
)


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
    """Returns why the options are unusable, or "" when they are fine."""
    for name in ("threads", "warmup_runs", "min_runs", "max_runs", "keep_samples"):
        if getattr(options, name) < 0:
            return f"options.{name}: expected >= 0, got {getattr(options, name)}"
    for name in ("warmup_min_seconds", "min_seconds", "timeout_seconds", "idle_seconds"):
        if getattr(options, name) < 0:
            return f"options.{name}: expected >= 0 seconds, got {getattr(options, name)}"
    if options.max_runs and options.max_runs < options.min_runs:
        return (
            f"options.max_runs ({options.max_runs}) is below options.min_runs ({options.min_runs})"
        )
    if options.accelerator not in ("", "cpu", "cuda"):
        return f"options.accelerator: expected 'cpu' or 'cuda', got {options.accelerator!r}"
    return ""

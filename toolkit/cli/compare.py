"""`edgeloop compare A B --device D`: is B faster or slower than A, with a 95% interval."""

from __future__ import annotations

import json
from pathlib import Path

import click

from device_agent.measure.options import DEFAULTS
from toolkit.cli.display import printable
from toolkit.stats.ab import MIN_ROUNDS, ABComparison, Verdict

DEFAULT_ROUNDS = 6


def verdict_line(c: ABComparison, a: str, b: str) -> str:
    """B relative to A, in words, with the interval as percentages."""
    if c.verdict is Verdict.SLOWER:
        return (f"{b} is slower than {a} by {100 * (c.ratio - 1):.1f}% "
                f"(95% CI {100 * (c.ci_low - 1):.1f}% to {100 * (c.ci_high - 1):.1f}%)")
    if c.verdict is Verdict.FASTER:
        return (f"{b} is faster than {a} by {100 * (1 - c.ratio):.1f}% "
                f"(95% CI {100 * (1 - c.ci_high):.1f}% to {100 * (1 - c.ci_low):.1f}%)")
    return (f"no detectable difference at this noise: {b} is between "
            f"{100 * (1 - c.ci_low):.1f}% faster and {100 * (c.ci_high - 1):.1f}% slower "
            f"than {a}")


@click.command()
@click.argument("model_a", type=click.Path(path_type=Path))
@click.argument("model_b", type=click.Path(path_type=Path))
@click.option("--device", default="local", show_default=True,
              help="local, host:port, or a profile name/path.")
@click.option("--rounds", type=click.IntRange(min=MIN_ROUNDS), default=DEFAULT_ROUNDS,
              show_default=True,
              help="Rounds; each benchmarks A once and B once, as A B, B A, A B, ...")
@click.option("--runtime", type=click.Choice(["tflite", "onnx", "torch", "tflm"]),
              help="Default: from the file type.")
@click.option("--threads", type=int, default=0,
              help="Runtime threads (default: the profile's, else the runtime's).")
@click.option("--runs", type=int, default=0,
              help=f"Minimum timed runs per benchmark [{DEFAULTS.min_runs}].")
@click.option("--warmup", type=int, default=0, help=f"Warm-up runs [{DEFAULTS.warmup_runs}].")
@click.option("--min-seconds", type=float, default=0.0,
              help=f"Minimum timed seconds per benchmark [{DEFAULTS.min_seconds:g}].")
@click.option("--timeout", type=float, default=0.0,
              help=f"Timeout of each benchmark in seconds [{DEFAULTS.timeout_seconds:g}].")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
@click.option("--no-store", is_flag=True, help="Do not write measurements to the results store.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare(model_a: Path, model_b: Path, device: str, rounds: int, runtime: str, threads: int,
            runs: int, warmup: int, min_seconds: float, timeout: float, seed: int,
            no_store: bool, as_json: bool) -> None:
    """Compare the latency of MODEL_B with MODEL_A on one device.

    A and B run in interleaved rounds (drift weighs on both alike), each benchmark a fresh
    child on the device. Prints the p50 ratio B/A with a 95% confidence interval from the raw
    samples (paired two-stage bootstrap, Student-t corrected: toolkit/stats/ab.py) and a
    verdict: faster, slower, or no detectable difference at this noise. Every measurement is
    stored as it arrives.
    """
    import uuid

    from toolkit.devices.connect import open_device, resolve_profile
    from toolkit.devices.precedence import resolve_options
    from toolkit.measurement import BenchmarkOptions
    from toolkit.results.store import ResultsStore
    from toolkit.stats.rounds import run_interleaved
    from toolkit.transport.model_file import model_format

    for path in (model_a, model_b):
        model_format(path)  # a clear error before anything starts
    profile = resolve_profile(device)
    options = resolve_options(BenchmarkOptions(
        runtime=runtime or "", threads=threads, min_runs=runs, warmup_runs=warmup,
        min_seconds=min_seconds, timeout_seconds=timeout), profile)
    names = (printable(model_a.name), printable(model_b.name))
    if names[0] == names[1]:
        names = (f"A:{names[0]}", f"B:{names[1]}")
    store = None if no_store else ResultsStore()
    run_id = uuid.uuid4().hex[:12]

    def arrived(which: str, round_index: int, m) -> None:  # noqa: ANN001
        if store is not None:
            store.append(m, run_id=run_id, extra={
                "source": "compare", "role": which, "round": round_index,
                "device_profile": profile.name})
        if not as_json:
            p50 = f"p50 {m.latency.p50_ms:.4g} ms" if m.ok else f"FAILED ({m.error_kind})"
            click.echo(f"round {round_index + 1}/{rounds}  {which.upper()} "
                       f"{names[which == 'b']}: {p50}", err=True)

    with open_device(profile) as client:
        a_sha, b_sha = client.push(model_a), client.push(model_b)
        run = run_interleaved(client, a_sha, b_sha, rounds, options, names=names,
                              on_measurement=arrived, seed=seed)
    c = run.comparison
    if as_json:
        click.echo(json.dumps({
            "a": {"model": str(model_a), "sha256": a_sha},
            "b": {"model": str(model_b), "sha256": b_sha},
            "device": run.a[0].device_id, "device_profile": profile.name, "run_id": run_id,
            "stored": store is not None, **c.to_json(),
        }, indent=2))
        return
    rows = [
        ("device", f"{printable(run.a[0].device_id)} ({run.a[0].runtime} "
                   f"{run.a[0].runtime_version})"),
        ("A", f"{names[0]}: p50 {c.a_p50_ms:.4g} ms; rounds "
              + " ".join(f"{x:.4g}" for x in c.a_round_p50_ms)),
        ("B", f"{names[1]}: p50 {c.b_p50_ms:.4g} ms; rounds "
              + " ".join(f"{x:.4g}" for x in c.b_round_p50_ms)),
        ("ratio B/A", f"{c.ratio:.3f} (95% CI {c.ci_low:.3f}-{c.ci_high:.3f}; {c.rounds} "
                      f"rounds, {c.resamples} bootstrap resamples, seed {c.seed})"),
        ("verdict", verdict_line(c, names[0], names[1])),
    ]
    for key, value in rows:
        click.echo(f"{key:<10} {value}")

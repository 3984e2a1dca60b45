"""`edgeloop profile MODEL`: measure a model file on a device and store the result."""

from __future__ import annotations

import json
from pathlib import Path

import click

from device_agent.measure.options import DEFAULTS
from toolkit.cli.db import tag_option
from toolkit.cli.display import printable
from toolkit.measurement import BenchmarkOptions, Measurement


def measurement_table(m: Measurement) -> list[tuple[str, str]]:
    """The rows a person reads: latency percentiles, memory, power when measured, provenance."""
    lat, mem, pw = m.latency, m.memory, m.power
    rows = [
        ("device", f"{m.device_id} ({m.device_arch})"),
        ("model", f"{m.model_name} sha256:{m.model_sha256[:12]}"),
        (
            "runtime",
            f"{m.runtime} {m.runtime_version}, threads {m.threads or 'default'}, {m.accelerator}",
        ),
    ]
    if lat:
        rows += [
            (
                "latency",
                f"p50 {lat.p50_ms:.4g} ms  p90 {lat.p90_ms:.4g} ms  p99 {lat.p99_ms:.4g} ms",
            ),
            (
                "",
                f"mean {lat.mean_ms:.4g} ± {lat.std_ms:.3g} ms (CV {lat.cv:.1%}), "
                f"min {lat.min_ms:.4g}, max {lat.max_ms:.4g}, n {lat.n}",
            ),
            ("load", f"{m.load_ms:.1f} ms, first inference {m.first_inference_ms:.3g} ms"),
        ]
    dut = m.host_round_trip_p50_ms is not None  # a DUT: its own timer, no memory or power
    if dut:
        rows.append(("round trip", f"p50 {m.host_round_trip_p50_ms:.4g} ms per infer command "
                     "on the host's clock (latency above: the DUT's own timer)"))
        rows.append(("memory", "not reported by the DUT"))
        mem = None
    if mem:
        arena = f", TFLM arena {mem.tflm_arena_bytes} B" if mem.tflm_arena_bytes else ""
        rows.append(
            (
                "memory",
                f"peak RSS +{mem.peak_rss_mb:.1f} MB, "
                f"file {mem.model_size_bytes / 1024:.1f} KB{arena}",
            )
        )
    if pw:
        rows.append(
            (
                "power",
                f"{pw.mean_w:.2f} W (idle {pw.idle_w:.2f} W), "
                f"{pw.energy_per_inference_mj:.3g} mJ/inference "
                f"[{pw.sensor}, {pw.samples} samples]",
            )
        )
    elif dut:
        rows.append(("power", "not measured: no energy meter configured for this DUT"))
    else:
        rows.append(("power", "no power sensor readable on this device"))
    state = _device_state(m)
    if state:
        rows.append(("state", state))
    if getattr(m, "real_inputs", False):
        rows.append(("inputs", f"real samples, sha256:{m.inputs_sha256[:12]}"))
    for warning in m.warnings:
        rows.append(("warning", warning))
    return rows


def _device_state(m: Measurement) -> str:
    """Governor, frequency, CPUs and temperature across the timed window, where read."""
    from device_agent.measure.device_state import format_cpu_list  # imports the sensors

    parts = []
    governor, freq = getattr(m, "governor", None), getattr(m, "cpu_freq_mhz", None)
    if governor or freq:
        parts.append(" ".join(x for x in (governor or "", f"{freq:.0f} MHz" if freq else "") if x))
    affinity = getattr(m, "affinity", None)
    if affinity:
        parts.append(f"CPUs {format_cpu_list(affinity)}")
    before = getattr(m, "temperature_c_before", None)
    after = getattr(m, "temperature_c_after", None)
    if before is not None and after is not None:
        parts.append(f"{before:.1f} → {after:.1f} °C")
    waited = getattr(m, "cooldown_waited_s", None)
    if waited:
        parts.append(f"waited {waited:.1f} s before starting")
    return ", ".join(parts)


def check_inputs_file(path: Path) -> None:
    """`--inputs`: an existing .npz of plain arrays (no pickles), within the agent's size bound;
    one line naming the file otherwise. Names, shapes and dtypes are checked on the device,
    against the model's inputs as its runtime loaded them, before the timed loop."""
    import zipfile

    import numpy as np

    from device_agent.measure.real_inputs import MAX_SAMPLES_BYTES
    from toolkit.errors import ConfigError

    if path.suffix.lower() != ".npz" or not path.is_file():
        raise ConfigError(f"--inputs {path}: expected an existing .npz file")
    try:
        with zipfile.ZipFile(path) as archive:
            total = sum(info.file_size for info in archive.infolist())
        if total > MAX_SAMPLES_BYTES:
            raise ConfigError(f"--inputs {path}: {total} bytes of arrays, more than the "
                              f"{MAX_SAMPLES_BYTES} an agent reads")
        with np.load(path, allow_pickle=False) as npz:
            for name in npz.files:
                npz[name]  # an object array (a pickle) raises here
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"--inputs {path}: not an .npz of plain arrays: {exc}") from None


def _check_inputs_used(m: Measurement, inputs_file) -> None:
    """An agent that predates `inputs_sha256` ignores it and runs random inputs: its row says
    real_inputs false, and the command fails rather than print those figures as the samples'."""
    from toolkit.errors import AgentError

    if inputs_file is not None and m.ok and not m.real_inputs:
        raise AgentError(f"device {m.device_id}: agent {m.agent_version or '(unknown version)'} "
                         f"ran random inputs, not --inputs {inputs_file} (it predates the "
                         "option; upgrade the agent)")


def parse_cpu_list(text: str) -> tuple[int, ...]:
    """`--cpu-affinity`: the agent's CPU-list syntax; a bad list is a usage error naming it."""
    if not text.strip():
        return ()  # no pinning asked: nothing to import (device_state imports the sensors)
    from device_agent.measure import device_state

    try:
        return device_state.parse_cpu_list(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--cpu-affinity") from None


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--device", default="local", show_default=True, help="local, host:port, or a profile name/path."
)
@click.option(
    "--target", default="", metavar="ID",
    help="A device attached to DEVICE's agent: serial:PORT for a microcontroller on a port "
    "the gateway's agent serves with --serial-dut PORT.",
)
@click.option(
    "--runtime",
    type=click.Choice(["tflite", "onnx", "torch", "tflm", "executorch"]),
    help="Default: from the file type.",
)
@click.option(
    "--threads",
    type=int,
    default=0,
    help="Runtime threads (default: the profile's, else the runtime's).",
)
@click.option("--runs", type=int, default=0, help=f"Minimum timed runs [{DEFAULTS.min_runs}].")
@click.option("--warmup", type=int, default=0, help=f"Warm-up runs [{DEFAULTS.warmup_runs}].")
@click.option(
    "--min-seconds",
    type=float,
    default=0.0,
    help=f"Minimum timed duration in seconds [{DEFAULTS.min_seconds:g}].",
)
@click.option(
    "--timeout",
    type=float,
    default=0.0,
    help=f"Benchmark timeout in seconds [{DEFAULTS.timeout_seconds:g}].",
)
@click.option(
    "--power-sensor", default="",
    help="Sensor name, or 'none' [the one that follows the accelerator: nvml for CUDA runs, "
    "a CPU/board sensor for CPU runs].",
)
@click.option("--cooldown-s", type=float, default=0.0,
              help="Idle this long on the device before the benchmark starts [0].")
@click.option("--max-start-temp-c", type=float, default=0.0,
              help="Wait until the device is at or below this temperature (°C) before starting "
              "[no wait].")
@click.option("--start-temp-timeout-s", type=float, default=0.0,
              help="Give up waiting for --max-start-temp-c after this long (a warning says so).")
@click.option("--cpu-affinity", default="",
              help="Pin the benchmark process to these CPUs, e.g. '2,3' or '0-3'.")
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Independent benchmarks, each a fresh child on the device; reports the median of "
    "their p50s and their spread. Every run is stored as it arrives.",
)
@click.option(
    "--per-op", is_flag=True,
    help="Also profile per operator, after the timed runs (name, type, calls, mean ms, share).",
)
@click.option(
    "--inputs", "inputs_file", type=click.Path(path_type=Path), default=None,
    help="An .npz of real input samples (arrays named after the model's inputs, samples along "
    "axis 0): the timed loop cycles through them instead of random inputs; the row records "
    "the file's sha256.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the measurement as JSON.")
@tag_option
def profile(
    model, device, target, runtime, threads, runs, warmup, min_seconds, timeout, power_sensor,
    cooldown_s, max_start_temp_c, start_temp_timeout_s, cpu_affinity, repeat, as_json,
    per_op=False, inputs_file=None,
) -> None:
    """Measure MODEL (.tflite, .onnx, .pt2, .pte) on a device and append it to the results
    store."""
    from toolkit.cli.progress import ProgressLine
    from toolkit.errors import AgentError
    from toolkit.profiling import profile_model

    options = BenchmarkOptions(
        runtime=runtime or "",
        threads=threads,
        min_runs=runs,
        warmup_runs=warmup,
        min_seconds=min_seconds,
        timeout_seconds=timeout,
        power_sensor=power_sensor,
        cooldown_s=cooldown_s,
        max_start_temp_c=max_start_temp_c,
        start_temp_timeout_s=start_temp_timeout_s,
        cpu_affinity=parse_cpu_list(cpu_affinity),
        per_op=per_op,
    )
    if inputs_file is not None:
        check_inputs_file(inputs_file)
    label = f"{device} {target}" if target else device
    if target:
        from dataclasses import replace

        from toolkit.devices.connect import resolve_profile

        device = replace(resolve_profile(device), target=target)
    if repeat > 1:
        _repeated(model, device, options, repeat, as_json, label, inputs_file)
        return
    progress = ProgressLine(f"{printable(Path(model).name)} on {printable(label)}",
                            enabled=not as_json)
    try:
        m = profile_model(model, device=device, options=options, on_progress=progress,
                          inputs=inputs_file)
    finally:
        progress.close()
    _check_inputs_used(m, inputs_file)
    if as_json:
        click.echo(json.dumps(m.to_json(), indent=2))
    else:
        for key, value in measurement_table(m):
            click.echo(f"{key:<10} {value}")
        if per_op and m.ok:
            from toolkit.op_costs import ops_lines

            for line in ops_lines(m.ops, m.ops_source, m.ops_note):
                click.echo(printable(line, limit=400))
    if not m.ok:
        raise AgentError(
            f"device {m.device_id}: benchmark failed ({m.error_kind}): {m.error_message}"
        )


def _repeated(model: Path, device, options: BenchmarkOptions, repeat: int,
              as_json: bool, label: str = "", inputs_file=None) -> None:
    """`--repeat N`: N benchmarks in a row, each stored as it arrives (one run id), then the
    median of their p50s and the spread (`toolkit.stats.Spread`)."""
    import uuid

    from toolkit.cli.progress import ProgressLine
    from toolkit.errors import AgentError
    from toolkit.profiling import profile_model
    from toolkit.stats import Spread

    run_id, done = uuid.uuid4().hex[:12], []
    for i in range(repeat):
        progress = ProgressLine(f"{printable(Path(model).name)} on {printable(label or device)} "
                                f"(run {i + 1}/{repeat})", enabled=not as_json)
        try:
            m = profile_model(model, device=device, options=options, on_progress=progress,
                              run_id=run_id, inputs=inputs_file)
        finally:
            progress.close()
        if not m.ok:
            raise AgentError(f"device {m.device_id}: run {i + 1} of {repeat}: benchmark failed "
                             f"({m.error_kind}): {m.error_message} ({len(done)} earlier runs "
                             f"stored, run id {run_id})")
        _check_inputs_used(m, inputs_file)
        done.append(m)
        if not as_json:
            lat = done[-1].latency
            click.echo(f"run {i + 1:<6} p50 {lat.p50_ms:.4g} ms  p90 {lat.p90_ms:.4g} ms  "
                       f"CV {lat.cv:.1%}  n {lat.n}")
    spread = Spread.from_p50s([m.latency.p50_ms for m in done])
    if as_json:
        click.echo(json.dumps({"run_id": run_id, **spread.to_json(),
                               "measurements": [m.to_json() for m in done]}, indent=2))
        return
    for key, value in measurement_table(done[-1])[:3]:
        click.echo(f"{key:<10} {value}")
    click.echo(f"{'repeat':<10} {spread.describe()}")

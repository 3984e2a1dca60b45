"""Device classes of issue #13 on the local device: ExecuTorch vs LiteRT, the cost of --per-op,
and (when helper D's bench_serial offers it) the serial path's overhead.

    python bench/bench_devices.py [NAME ...]                  # the zoo's CNNs by default
    (each file is benchmarked ROUNDS=3 times, interleaved: median of the p50s and spread)

1. `.pte` (XNNPACK delegate) vs `.tflite` (LiteRT, its default XNNPACK delegate) p50 for each
   CNN of the zoo, fp32 and int8-static, both exported from the same model and (int8) the same
   quantize step's plan and PT2E graph, one thread each, on a real local agent. The models are
   untrained (seeded) with BatchNorm statistics measured on their dataset: latency does not
   depend on the weights' values; parity with torch is recorded, not enforced.
2. The cost of `--per-op`: the client's wall time of a benchmark with and without a
   per-operator profile (same options, 3 of each, interleaved), for each runtime on the fp32
   DS-CNN files, and the p50s of both (the timed figures must not move beyond run-to-run
   noise: the profile runs after the timed window).
3. `bench.bench_serial.serial_overhead` at 115200 baud, if that module exposes it.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import print_table, write_results  # noqa: E402

CNNS = ("ds_cnn", "mobilenet_v3_small", "mobilenet_v2", "efficientnet_lite0", "resnet18")
PER_OP_MODEL = "ds_cnn"
THREADS = 1
ROUNDS = 3  # independent benchmarks (each a fresh child) per file, the formats interleaved
CALIBRATION = 64
PARITY_SAMPLES = 128


def _model(name: str) -> tuple[Any, Any]:
    """The seeded untrained zoo model with BatchNorm statistics from its dataset, and the data."""
    import torch

    from bench.bench_zoo import dataset_for, kws_task, recalibrate_batch_norm
    from toolkit.models import load_model

    torch.manual_seed(0)
    model = load_model(name).module
    data = kws_task() if name == "ds_cnn" else dataset_for(name)
    recalibrate_batch_norm(model, data)
    return model.eval(), data


def _error(exc: BaseException) -> dict[str, str]:
    text = str(exc).strip().splitlines()
    return {"error": f"{type(exc).__name__}: {text[0] if text else ''}"}


def _exports(name: str, model: Any, data: Any, label: str, root: Path) -> dict[str, Any]:
    """.tflite and .pte of `model` (fp32, or int8-static from one quantize step: one plan, one
    PT2E graph for both), each with its parity against torch (int8: the simulated graph)."""
    import copy

    from toolkit.compress.base import StepContext
    from toolkit.compress.steps.quantize.apply import run_quantize
    from toolkit.compress.steps.quantize.step import QuantizeParams
    from toolkit.export import check_parity, export_tflite
    from toolkit.export.pte import export_pte, pte_calls

    shape = tuple(model.input_shape)
    plan, reference = None, model
    if label == "int8":
        ctx = StepContext(data=data, input_shape=shape)
        params = QuantizeParams(scheme="int8-static", calibration=CALIBRATION)
        reference, _ = run_quantize(params, copy.deepcopy(model), ctx)
        plan = ctx.artifacts["quantization"]
    out = root / name / label
    paths = {
        "tflite": export_tflite(model, shape, out / "model.tflite", quantization=plan),
        "pte": export_pte(model, shape, out / "model.pte", quantization=plan),
    }
    dtype = "int8" if plan is not None else "fp32"
    x = data.test_x[:PARITY_SAMPLES]
    parity = {
        fmt: check_parity(path, reference, x, dtype, raise_on_failure=False)
        for fmt, path in paths.items()
    }
    from toolkit.export.host_runtime import run_artifact
    from toolkit.quality import top1_agreement_pct

    same = top1_agreement_pct(
        run_artifact(paths["pte"], x.numpy()), run_artifact(paths["tflite"], x.numpy())
    )
    return {
        "paths": paths,
        "parity": parity,
        "pte_calls": pte_calls(paths["pte"]),
        "pte_vs_tflite_top1_pct": same,
    }


def _rounds(device: Any, paths: dict[str, Path], options: Any) -> dict[str, Any]:
    """ROUNDS benchmarks of each file, interleaved (A B, B A, …) so drift hits both alike:
    per file the median of the p50s, their spread, and every run."""
    from toolkit.stats import Spread

    runs: dict[str, list] = {fmt: [] for fmt in paths}
    order = list(paths)
    for i in range(ROUNDS):
        for fmt in order if i % 2 == 0 else order[::-1]:
            runs[fmt].append(device.benchmark(paths[fmt], options))
    out: dict[str, Any] = {}
    for fmt, ms in runs.items():
        bad = [m for m in ms if not m.ok]
        if bad:
            out[fmt] = {"error": f"{bad[0].error_kind}: {bad[0].error_message}"}
            continue
        spread = Spread.from_p50s([m.latency.p50_ms for m in ms])
        out[fmt] = {
            **spread.to_json(),
            "p90_ms": [m.latency.p90_ms for m in ms],
            "runtime": f"{ms[0].runtime} {ms[0].runtime_version}",
        }
    return out


def compare_formats(name: str, device: Any, options: Any, root: Path) -> dict[str, Any]:
    """fp32 and int8: .pte and .tflite p50/p90, file sizes, parity, and the .pte's calls.

    Parity is recorded, not enforced: these models are untrained, so their int8 logits can be
    near ties that flip (latency does not depend on the weights' values)."""
    model, data = _model(name)
    row: dict[str, Any] = {}
    for label in ("fp32", "int8"):
        try:
            made = _exports(name, model, data, label, root)
        except Exception as exc:  # noqa: BLE001 - a failure is a result of the benchmark
            row[label] = _error(exc)
            continue
        cell: dict[str, Any] = {
            "pte_calls": made["pte_calls"],
            "pte_vs_tflite_top1_pct": made["pte_vs_tflite_top1_pct"],
        }
        for fmt, figures in _rounds(device, made["paths"], options).items():
            report = made["parity"][fmt]
            cell[fmt] = {
                **figures,
                "bytes": made["paths"][fmt].stat().st_size,
                "top1_vs_torch_pct": report.top1_agreement_pct,
                "max_abs_diff": report.max_abs_diff,
            }
        if "median_p50_ms" in cell["tflite"] and "median_p50_ms" in cell["pte"]:
            cell["pte_over_tflite_p50"] = (
                cell["pte"]["median_p50_ms"] / cell["tflite"]["median_p50_ms"]
            )
        row[label] = cell
    return row


def per_op_cost(files: dict[str, Path], device: Any, options: Any) -> dict[str, Any]:
    """Per format, ROUNDS times each (interleaved): the wall time and p50 of a plain benchmark
    and of one with per_op; medians of each, and the per-op one's extra wall time."""
    import statistics
    from dataclasses import replace

    with_ops = replace(options, per_op=True)
    out: dict[str, Any] = {}
    for fmt, path in files.items():
        walls: dict[str, list[float]] = {"plain": [], "per_op": []}
        p50s: dict[str, list[float]] = {"plain": [], "per_op": []}
        ops, source, error = 0, "", ""
        for i in range(ROUNDS):
            pair = [("plain", options), ("per_op", with_ops)]
            for label, opts in pair if i % 2 == 0 else pair[::-1]:
                start = time.perf_counter()
                m = device.benchmark(path, opts)
                wall = time.perf_counter() - start
                if not m.ok:
                    error = f"{m.error_kind}: {m.error_message}"
                    continue
                walls[label].append(wall)
                p50s[label].append(m.latency.p50_ms)
                if label == "per_op":
                    ops, source = len(m.ops), m.ops_source
        if error or not walls["plain"] or not walls["per_op"]:
            out[fmt] = {"error": error or "no run"}
            continue
        med = {k: statistics.median(v) for k, v in walls.items()}
        p50 = {k: statistics.median(v) for k, v in p50s.items()}
        out[fmt] = {
            "plain_wall_s": walls["plain"],
            "per_op_wall_s": walls["per_op"],
            "median_plain_wall_s": med["plain"],
            "median_per_op_wall_s": med["per_op"],
            "median_extra_wall_s": med["per_op"] - med["plain"],
            "plain_p50_ms": p50s["plain"],
            "per_op_p50_ms": p50s["per_op"],
            "per_op_p50_over_plain": p50["per_op"] / p50["plain"],
            "ops": ops,
            "ops_source": source,
        }
    return out


def _per_op_files(root: Path) -> dict[str, Path]:
    """The fp32 PER_OP_MODEL as .tflite, .onnx, .pt2 and .pte (compress writes them all)."""
    from toolkit.compress.pipeline import compress

    model, data = _model(PER_OP_MODEL)
    result = compress(model, [], data, root / "per-op", export=("tflite", "onnx", "pte"))
    return {fmt: result.artifacts[fmt] for fmt in ("tflite", "onnx", "pt2", "pte")}


def serial() -> dict[str, Any]:
    """Helper D's serial overhead at 115200 baud, or why it is absent."""
    try:
        from bench.bench_serial import serial_overhead
    except ImportError as exc:
        return {"skipped": f"bench.bench_serial.serial_overhead not importable: {exc}"}
    try:
        return serial_overhead(bauds=(115200,), runs=50)
    except Exception as exc:  # noqa: BLE001 - recorded, not raised
        return _error(exc)


def table_rows(figures: dict[str, Any]) -> list[tuple]:
    def p50(cell: dict, fmt: str) -> str:
        value = cell.get(fmt, {}).get("median_p50_ms") if isinstance(cell, dict) else None
        return f"{value:.4g}" if value is not None else cell.get("error", "-")[:40]

    def ratio(cell: dict) -> str:
        value = cell.get("pte_over_tflite_p50") if isinstance(cell, dict) else None
        return f"{value:.2f}x" if value is not None else "-"

    rows = []
    for name, row in figures.items():
        fp32, int8 = row.get("fp32", {}), row.get("int8", {})
        rows.append(
            (
                name,
                p50(fp32, "tflite"),
                p50(fp32, "pte"),
                ratio(fp32),
                p50(int8, "tflite"),
                p50(int8, "pte"),
                ratio(int8),
            )
        )
    return rows


def _write(
    names: list[str], figures: dict, cost: Any, serial_figures: Any, start: float, options: Any
) -> tuple[tuple, list]:
    """Writes bench/results/devices.json with what is measured so far; returns the table."""
    header = (
        "model",
        "fp32 tflite p50 ms",
        "fp32 pte p50",
        "pte/tflite",
        "int8 tflite p50",
        "int8 pte p50",
        "pte/tflite",
    )
    rows = table_rows(figures)
    write_results(
        "devices",
        {
            "threads": THREADS,
            "rounds": ROUNDS,
            "options": {
                "warmup_runs": options.warmup_runs,
                "min_runs": options.min_runs,
                "min_seconds": options.min_seconds,
            },
            "cnns": names,
            "wall_s": round(time.perf_counter() - start, 1),
            "header": list(header),
            "table": [list(r) for r in rows],
            "pte_vs_tflite": figures,
            "per_op_cost": {"model": f"{PER_OP_MODEL} fp32", "formats": cost},
            "serial_overhead": serial_figures,
        },
    )
    return header, rows


def main(names: list[str]) -> None:
    import torch

    from toolkit.measurement import BenchmarkOptions
    from toolkit.transport.local import local_agent

    torch.set_num_threads(1)
    names = names or list(CNNS)
    options = BenchmarkOptions(
        threads=THREADS, warmup_runs=20, min_runs=200, min_seconds=1.0, power_sensor="none"
    )
    start = time.perf_counter()
    figures: dict[str, Any] = {}
    cost: Any = None
    serial_figures = serial()  # first: the emulated DUT is quick, and its figure is kept
    with tempfile.TemporaryDirectory() as tmp, local_agent(cache_dir=Path(tmp) / "cache") as dev:
        try:
            cost = per_op_cost(_per_op_files(Path(tmp)), dev, options)
        except Exception as exc:  # noqa: BLE001
            cost = _error(exc)
        print(f"per-op cost ({PER_OP_MODEL} fp32): {cost}", flush=True)
        _write(names, figures, cost, serial_figures, start, options)
        for name in names:
            try:
                figures[name] = compare_formats(name, dev, options, Path(tmp))
            except Exception as exc:  # noqa: BLE001
                figures[name] = _error(exc)
            print(f"{name}: {figures[name]}", flush=True)
            _write(names, figures, cost, serial_figures, start, options)  # kept if cut short
    header, rows = _write(names, figures, cost, serial_figures, start, options)
    print_table(rows, header)


if __name__ == "__main__":
    main(sys.argv[1:])

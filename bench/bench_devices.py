"""Device classes of issue #13 on the local device: ExecuTorch vs LiteRT, the cost of --per-op,
and (when helper D's bench_serial offers it) the serial path's overhead.

    python bench/bench_devices.py [NAME ...]                  # the zoo's CNNs by default
    python bench/repeat.py bench/bench_devices.py --runs 3    # median and spread of 3 runs

1. `.pte` (XNNPACK delegate) vs `.tflite` (LiteRT, its default XNNPACK delegate) p50 for each
   CNN of the zoo, fp32 and int8-static, both exported from the same model and (int8) the same
   quantize step's plan and PT2E graph, one thread each, on a real local agent. The models are
   untrained (seeded) with BatchNorm statistics measured on their dataset: latency does not
   depend on the weights' values; parity with torch is recorded, not enforced.
2. The cost of `--per-op`: wall time of a benchmark with and without a per-operator profile
   (same options; the client's wall clock per call, and the agent child's own `wall_s`), for
   each runtime on the fp32 MobileNetV2 files, and the two p50s (the timed figures must not
   move beyond run-to-run noise: the profile runs after the timed window).
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

CNNS = ("mobilenet_v2", "mobilenet_v3_small", "efficientnet_lite0", "resnet18", "ds_cnn")
INT8 = [{"quantize": {"scheme": "int8-static", "calibration": 128}}]
PER_OP_MODEL = "mobilenet_v2"
THREADS = 1


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
        params = QuantizeParams(scheme="int8-static", calibration=128)
        reference, _ = run_quantize(params, copy.deepcopy(model), ctx)
        plan = ctx.artifacts["quantization"]
    out = root / name / label
    paths = {
        "tflite": export_tflite(model, shape, out / "model.tflite", quantization=plan),
        "pte": export_pte(model, shape, out / "model.pte", quantization=plan),
    }
    dtype = "int8" if plan is not None else "fp32"
    parity = {
        fmt: check_parity(path, reference, data.test_x[:256], dtype, raise_on_failure=False)
        for fmt, path in paths.items()
    }
    return {"paths": paths, "parity": parity, "pte_calls": pte_calls(paths["pte"])}


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
        cell: dict[str, Any] = {"pte_calls": made["pte_calls"]}
        for fmt, path in made["paths"].items():
            m = device.benchmark(path, options)
            report = made["parity"][fmt]
            cell[fmt] = (
                {
                    "p50_ms": m.latency.p50_ms,
                    "p90_ms": m.latency.p90_ms,
                    "cv": m.latency.cv,
                    "bytes": path.stat().st_size,
                    "runtime": f"{m.runtime} {m.runtime_version}",
                    "top1_vs_torch_pct": report.top1_agreement_pct,
                    "max_abs_diff": report.max_abs_diff,
                }
                if m.ok
                else {"error": f"{m.error_kind}: {m.error_message}"}
            )
        if "p50_ms" in cell["tflite"] and "p50_ms" in cell["pte"]:
            cell["pte_over_tflite_p50"] = cell["pte"]["p50_ms"] / cell["tflite"]["p50_ms"]
        row[label] = cell
    return row


def per_op_cost(files: dict[str, Path], device: Any, options: Any) -> dict[str, Any]:
    """Per format: wall time and p50 of a plain benchmark and of one with per_op."""
    from dataclasses import replace

    out: dict[str, Any] = {}
    for fmt, path in files.items():
        cell: dict[str, Any] = {}
        for label, opts in (("plain", options), ("per_op", replace(options, per_op=True))):
            start = time.perf_counter()
            m = device.benchmark(path, opts)
            wall = time.perf_counter() - start
            if not m.ok:
                cell[label] = {"error": f"{m.error_kind}: {m.error_message}"}
                continue
            cell[label] = {
                "client_wall_s": wall,
                "child_wall_s": m.wall_s,
                "p50_ms": m.latency.p50_ms,
                "ops": len(m.ops),
                "ops_source": m.ops_source,
            }
        if "client_wall_s" in cell.get("plain", {}) and "client_wall_s" in cell.get("per_op", {}):
            cell["extra_wall_s"] = cell["per_op"]["client_wall_s"] - cell["plain"]["client_wall_s"]
            cell["per_op_p50_over_plain"] = cell["per_op"]["p50_ms"] / cell["plain"]["p50_ms"]
        out[fmt] = cell
    return out


def _per_op_files(root: Path) -> dict[str, Path]:
    """The fp32 MobileNetV2 as .tflite, .onnx, .pt2 and .pte (compress writes them all)."""
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
        value = cell.get(fmt, {}).get("p50_ms") if isinstance(cell, dict) else None
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


def main(names: list[str]) -> None:
    import torch

    from toolkit.measurement import BenchmarkOptions
    from toolkit.transport.local import local_agent

    torch.set_num_threads(1)
    options = BenchmarkOptions(
        threads=THREADS, warmup_runs=20, min_runs=200, min_seconds=1.0, power_sensor="none"
    )
    start = time.perf_counter()
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, local_agent(cache_dir=Path(tmp) / "cache") as dev:
        for name in names or CNNS:
            try:
                figures[name] = compare_formats(name, dev, options, Path(tmp))
            except Exception as exc:  # noqa: BLE001
                figures[name] = _error(exc)
            print(f"{name}: {figures[name]}", flush=True)
        try:
            cost = per_op_cost(_per_op_files(Path(tmp)), dev, options)
        except Exception as exc:  # noqa: BLE001
            cost = _error(exc)
        print(f"per-op cost ({PER_OP_MODEL} fp32): {cost}", flush=True)
    serial_figures = serial()
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
    print_table(rows, header)
    write_results(
        "devices",
        {
            "threads": THREADS,
            "cnns": list(names or CNNS),
            "wall_s": round(time.perf_counter() - start, 1),
            "header": list(header),
            "table": [list(r) for r in rows],
            "pte_vs_tflite": figures,
            "per_op_cost": {"model": f"{PER_OP_MODEL} fp32", "formats": cost},
            "serial_overhead": serial_figures,
        },
    )


if __name__ == "__main__":
    main(sys.argv[1:])

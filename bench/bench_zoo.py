"""The zoo side by side on the local device, one run (skeleton: NetAdapt column to be added).

    python bench/bench_zoo.py [NAME ...]

For each architecture of `toolkit.models.zoo` (untrained, 10 classes, its small default input)
and for the trained `digits-mobilenet`: fp32 TFLite p50 on one thread; int8-static p50 and
size as ratios of fp32; top-1 agreement with fp32 on random inputs (accuracy on digits-32 for
digits-mobilenet); float islands left in the int8 file (QUANTIZE/DEQUANTIZE ops and delegate
partitions); 30% group-pruned p50 ratio; NetAdapt trials to meet 0.7× p90 (not yet measured).
A step that fails is recorded as its one-line error, not raised: the table shows every model.

Targets (issue 9): int8 p50 ≤ 0.6× fp32 for every CNN; ≤ 1 point accuracy drop on
digits-mobilenet, ≥ 99% agreement elsewhere; one delegate partition; NetAdapt ≤ 12 trials.
"""

from __future__ import annotations

import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import print_table, write_results  # noqa: E402

INT8 = [{"quantize": {"scheme": "int8-static", "calibration": 128}}]
PRUNED30 = [{"prune": {"method": "l1-structured", "amount": 0.3}}]
SAMPLES = 256


def synthetic_dataset(name: str, model: Any, input_shape: tuple[int, ...]) -> Any:
    """Random inputs labelled by the fp32 model itself: accuracy there is top-1 agreement."""
    import torch

    from toolkit.data import Dataset
    from toolkit.models.train import predict

    generator = torch.Generator().manual_seed(0)
    x = torch.randn((2 * SAMPLES, *input_shape[1:]), generator=generator)
    y = predict(model, x).argmax(dim=1)
    return Dataset(name=f"random-{name}", train_x=x[:SAMPLES], train_y=y[:SAMPLES],
                   test_x=x[SAMPLES:], test_y=y[SAMPLES:], num_classes=10,
                   input_shape=tuple(input_shape[1:]))


def op_histogram(path: Path) -> Counter:
    """Op names of a .tflite file and their counts."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    return Counter(op["op_name"] for op in interpreter._get_ops_details())


def models() -> dict[str, tuple[Any, tuple[int, ...], Any]]:
    """name → (model, input shape, dataset or None for a synthetic one)."""
    from toolkit.data import load_dataset
    from toolkit.models.reference import reference_model
    from toolkit.models.zoo import ZOO, build

    chosen: dict[str, tuple[Any, tuple[int, ...], Any]] = {}
    trained = reference_model("digits-mobilenet")
    chosen["digits-mobilenet"] = (trained, trained.input_shape, load_dataset("digits-32"))
    for name, entry in ZOO.items():
        chosen[name] = (build(name).eval(), entry.input_shape, None)
    return chosen


def measure(name: str, model: Any, shape: tuple[int, ...], data: Any, device: Any,
            options: Any, root: Path) -> dict[str, Any]:
    from toolkit.compress.pipeline import compress

    data = data if data is not None else synthetic_dataset(name, model, shape)
    row: dict[str, Any] = {}
    for label, recipe in (("fp32", []), ("int8", INT8), ("pruned30", PRUNED30)):
        try:
            result = compress(model, recipe, data, root / name / label, export=("tflite",))
            tflite = result.artifacts["tflite"]
            m = device.benchmark(tflite, options)
            row[label] = {"p50_ms": m.latency.p50_ms, "bytes": tflite.stat().st_size,
                          "accuracy_pct": result.card.accuracy_after_pct,
                          "ops": dict(op_histogram(tflite))}
        except Exception as exc:  # noqa: BLE001 - a failure is a result of the benchmark
            text = str(exc).strip().splitlines()
            row[label] = {"error": f"{type(exc).__name__}: {text[0] if text else ''}"}
    row["netadapt_trials_to_0.7_p90"] = None  # TODO(issue 9): NetAdapt per group
    return row


def ratio(row: dict, key: str, field: str) -> str:
    if "error" in row.get(key, {}) or "error" in row.get("fp32", {}):
        return "error"
    return f"{row[key][field] / row['fp32'][field]:.2f}x"


def main(names: list[str]) -> None:
    from toolkit.measurement import BenchmarkOptions
    from toolkit.transport.local import local_agent

    options = BenchmarkOptions(threads=1, warmup_runs=20, min_runs=200, min_seconds=1.0)
    figures: dict[str, Any] = {}
    chosen = models()
    with tempfile.TemporaryDirectory() as tmp, local_agent(cache_dir=Path(tmp) / "cache") as dev:
        for name, (model, shape, data) in chosen.items():
            if names and name not in names:
                continue
            figures[name] = measure(name, model, shape, data, dev, options, Path(tmp))
            print(f"{name}: {figures[name]}", flush=True)
    rows = []
    for name, row in figures.items():
        fp32, int8 = row["fp32"], row["int8"]
        ops = int8.get("ops", {})
        islands = ops.get("QUANTIZE", 0) + ops.get("DEQUANTIZE", 0)
        rows.append((
            name,
            f"{fp32['p50_ms']:.3f}" if "p50_ms" in fp32 else "error",
            ratio(row, "int8", "p50_ms"), ratio(row, "int8", "bytes"),
            f"{int8['accuracy_pct']:.1f}%" if "accuracy_pct" in int8 else "error",
            islands if ops else "error",
            ratio(row, "pruned30", "p50_ms"),
            row["netadapt_trials_to_0.7_p90"] or "—",
        ))
    print_table(rows, ("model", "fp32 p50 ms", "int8 p50", "int8 size", "int8 acc/agree",
                       "Q/DQ ops", "pruned30 p50", "NetAdapt trials"))
    write_results("zoo", {"figures": figures})


if __name__ == "__main__":
    main(sys.argv[1:])

"""How far independent benchmarks of one model agree: `edgeloop profile --repeat 3` of every zoo
model's fp32 TFLite file on the local device.

    python bench/bench_zoo_repeat.py [--repeat 3] [NAME ...]     # all zoo models by default

Each model (`toolkit.models.zoo.ZOO`, seeded, untrained: an fp32 file's latency depends on its
ops and shapes, not on the values of its weights) is converted to TFLite once, then measured
by the CLI exactly as a user runs it — `edgeloop profile FILE --repeat N --threads 1 --json`,
default benchmark options, the CLI's long-lived local agent in a fresh EDGELOOP_HOME — which
runs N independent benchmarks, each in a fresh process on the device, and reports the median
of their p50s and the relative spread (max - min) / median. Writes bench/results/
zoo_repeat.json with every run's p50, the git sha and the machine (load included).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import print_table, write_results  # noqa: E402


def export_fp32(name: str, folder: Path) -> Path:
    import litert_torch
    import torch

    from toolkit.models.zoo import ZOO, build

    torch.manual_seed(0)
    model = build(name).eval()
    path = folder / f"{name}.tflite"
    example = (torch.randn(*ZOO[name].input_shape),)
    litert_torch.convert(model, example).export(str(path))
    return path


def profile_repeat(path: Path, repeat: int, home: Path) -> dict:
    beside = Path(sys.executable).parent / "edgeloop"
    command = [str(beside) if beside.exists() else "edgeloop", "profile", str(path),
               "--repeat", str(repeat), "--threads", "1", "--json"]  # fmt: skip
    env = dict(os.environ, EDGELOOP_HOME=str(home))
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1][:300] if done.stderr else "failed"}
    data = json.loads(done.stdout)
    return {key: data[key] for key in data if key != "measurements"} | {
        "cv_per_run": [m["latency"]["cv"] for m in data["measurements"]],
        "n_per_run": [m["latency"]["n"] for m in data["measurements"]],
    }


def main(argv: list[str] | None = None) -> int:
    from toolkit.models.zoo import ZOO

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help=f"zoo models (default: all of {sorted(ZOO)})")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(ZOO))
    if unknown:
        parser.error(f"unknown zoo models {unknown}; expected some of {sorted(ZOO)}")
    names = args.names or list(ZOO)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        home = folder / "home"
        try:
            for name in names:
                path = export_fp32(name, folder)
                results[name] = profile_repeat(path, args.repeat, home)
                print(name, results[name], flush=True)
        finally:
            subprocess.run([sys.executable, "-m", "toolkit.cli.main", "agent", "stop"],
                           env=dict(os.environ, EDGELOOP_HOME=str(home)),
                           capture_output=True, timeout=60)  # fmt: skip
    rows = []
    for name, r in results.items():
        if "error" in r:
            rows.append((name, "failed", r["error"], ""))
            continue
        p50s = ", ".join(f"{x:.4g}" for x in r["p50s_ms"])
        rows.append((name, f"{r['median_p50_ms']:.4g} ms", f"{r['relative_spread']:.1%}", p50s))
    print_table(rows, ("model (fp32 tflite, 1 thread)", "median p50", "spread", "p50 per run"))
    path = write_results("zoo_repeat", {"repeat": args.repeat, "models": results})
    print(f"\nwrote {path}")
    return 0 if all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

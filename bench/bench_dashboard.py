"""Dashboard page render times on a lab-sized results database (target: < 500 ms per page).

Fills a fresh SQLite results database with `--rows` (default 100,000) synthetic but realistic
measurements — 12 devices, 40 models in 8 families, 4 runtimes, ~200 raw samples each (a
lognormal around a per model and device median with run-to-run drift, a step change on a few
devices at a later tag), failures and warnings at lab rates — written through the schema's
own `measurements` table in the store's row format (`Measurement.to_row()` and its JSON
record), plus validation gates, lineage and one tuning run. Then it serves the dashboard app
in-process (the same FastAPI app `edgeloop dashboard` serves) and times each page, two ways:

- uncached: each request through a new app (a new read-only engine, the app's caches empty:
  nothing an earlier request computed is reused; the OS page cache does stay warm);
- cached: one app, after a first request of the same page: the lists of what exists (kept
  `LISTS_TTL_S`) and the history noise tests that request computed are reused from memory.

Each run's figure for a page is the median of `--repeat` requests (`median_ms`), with the run's
fastest and slowest request beside it (`fastest_request_ms`, `slowest_request_ms`: not a
spread across runs). A spread across runs is `bench/repeat.py`'s: in `dashboard.repeat.json`,
`figures["pages[i].uncached.median_ms"]` has the median, min and max of the runs' medians.
JSON to bench/results/dashboard.json with commit, machine and load.

    python -m bench.bench_dashboard [--rows 100000] [--repeat 3] [--db PATH]
    python bench/repeat.py bench/bench_dashboard.py --runs 3
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import print_table, write_results
from toolkit.dashboard.views import LISTS_TTL_S

TARGET_MS = 500.0
DEVICES = [f"{kind}-{i:02d}" for kind in ("rpi5", "jetson", "nuc", "pixel") for i in range(3)]
RUNTIMES = {"tflite": "2.19.0", "onnx": "1.22.1", "torch": "2.13.0", "tflm": "1.0"}
FAMILIES = [
    "ds-cnn",
    "mobilenetv3-small",
    "efficientnet-lite0",
    "resnet8",
    "digits-cnn",
    "digits-mobilenet",
    "kws-tiny",
    "vww-96",
]
VARIANTS = ["fp32", "int8", "pruned-50", "pruned-25", "fp16"]
TAGS = [f"v0.{i}" for i in range(1, 11)]
SAMPLES = 200


def _measurement(
    rng: np.random.Generator,
    device: str,
    model: str,
    sha: str,
    runtime: str,
    median_ms: float,
    ts: float,
    failed: bool,
) -> Any:
    from toolkit.errors import ErrorKind
    from toolkit.measurement import (
        BenchmarkOptions,
        Latency,
        Measurement,
        Memory,
        Provenance,
        Thermal,
    )

    options = BenchmarkOptions(runtime=runtime, min_runs=SAMPLES)
    prov = Provenance(
        device_id=device,
        device_hostname=device,
        device_arch="aarch64",
        model_sha256=sha,
        model_name=model,
        runtime=runtime,
        runtime_version=RUNTIMES[runtime],
        threads=4,
        accelerator="cpu",
        options=options,
        requested_options=options,
        timestamp=ts,
        toolkit_version="0.1.0",
        agent_version="0.1.0",
        protocol_version=3,
        os="Linux",
        kernel="6.6",
        cpu_model="Cortex-A76",
        python_version="3.11",
        governor="performance",
        cpu_freq_mhz=2400.0,
        affinity=(2, 3),
    )
    if failed:
        return Measurement(
            ok=False,
            error_kind=ErrorKind.TIMEOUT,
            error_message="benchmark child ran past its 60 s timeout",
            provenance=prov,
            latency=None,
            memory=None,
            power=None,
        )
    samples = np.sort(rng.lognormal(np.log(median_ms), 0.06, SAMPLES))
    mean, std = float(samples.mean()), float(samples.std())
    q = np.quantile(samples, [0.5, 0.9, 0.95, 0.99])
    latency = Latency(
        n=SAMPLES,
        mean_ms=mean,
        std_ms=std,
        cv=std / mean,
        min_ms=float(samples[0]),
        p50_ms=float(q[0]),
        p90_ms=float(q[1]),
        p95_ms=float(q[2]),
        p99_ms=float(q[3]),
        max_ms=float(samples[-1]),
        load_ms=12.0,
        first_inference_ms=median_ms * 3,
        timed_window_s=float(samples.sum() / 1e3),
        samples_ms=tuple(round(float(x), 4) for x in rng.permutation(samples)),
    )
    warnings = ("latency CV 12% is above 10%: the device was busy",) if rng.random() < 0.03 else ()
    return Measurement(
        ok=True,
        error_kind=ErrorKind.NONE,
        error_message="",
        provenance=prov,
        latency=latency,
        memory=Memory(
            peak_rss_mb=float(rng.uniform(8, 60)),
            baseline_rss_mb=30.0,
            model_size_bytes=int(rng.integers(50_000, 5_000_000)),
        ),
        power=None,
        thermal=Thermal(temperature_c_before=45.0, temperature_c_after=47.5),
        wall_s=3.0,
        warnings=warnings,
    )


def fill(url: str, rows: int, seed: int = 0) -> dict[str, int]:
    """Writes `rows` measurements (and gates, lineage, a tuning run) into the database."""
    from sqlalchemy import insert

    from toolkit.db import schema
    from toolkit.db.engine import get_engine
    from toolkit.db.upgrade import ensure_current

    engine = get_engine(url)
    ensure_current(engine)
    rng = np.random.default_rng(seed)
    models = [
        (f"{family}-{variant}", f"{abs(hash((family, variant, seed))):064x}"[:64])
        for family in FAMILIES
        for variant in VARIANTS
    ]
    base = {(d, m): float(rng.uniform(0.5, 40.0)) for d in DEVICES for m, _ in models}
    step = {d: 1.15 if i % 4 == 0 else 1.0 for i, d in enumerate(DEVICES)}  # a regression
    start = time.time() - 60 * 86400
    batch: list[dict[str, Any]] = []
    written = 0
    with engine.begin() as db:
        for i in range(rows):
            device = DEVICES[int(rng.integers(len(DEVICES)))]
            model, sha = models[int(rng.integers(len(models)))]
            runtime = list(RUNTIMES)[int(rng.integers(len(RUNTIMES)))]
            tag_index = min(len(TAGS) - 1, i * len(TAGS) // rows)
            factor = step[device] if tag_index >= len(TAGS) - 2 else 1.0
            ts = start + 60 * 86400 * i / rows
            m = _measurement(
                rng,
                device,
                model,
                sha,
                runtime,
                base[(device, model)] * factor,
                ts,
                failed=rng.random() < 0.02,
            )
            batch.append(
                {
                    "run_id": f"run-{i // 20:06d}",
                    "options_json": m.provenance.options.key(),
                    "record_json": json.dumps(m.to_json()),
                    "extra_json": json.dumps({"source": "bench"}),
                    "tag": TAGS[tag_index],
                    **m.to_row(),
                }
            )
            if len(batch) == 2000:
                db.execute(insert(schema.measurements), batch)
                written += len(batch)
                batch = []
        if batch:
            db.execute(insert(schema.measurements), batch)
            written += len(batch)
        _gates_lineage_tuning(db, schema, models, rng, start)
    return {"measurements": written, "devices": len(DEVICES), "models": len(models)}


def _gates_lineage_tuning(
    db: Any, schema: Any, models: list[tuple[str, str]], rng: np.random.Generator, start: float
) -> None:
    from sqlalchemy import insert

    for v in range(200):
        run_id, failed = f"val-{v:04d}", 0
        rows = []
        for device in DEVICES:
            for check in ("latency_p90_ms", "memory_mb", "parity", "accuracy"):
                ok = bool(rng.random() > 0.05)
                failed += not ok
                rows.append(
                    {
                        "run_id": run_id,
                        "fleet": "lab",
                        "device": device,
                        "check": check,
                        "passed": ok,
                        "detail": "within budget" if ok else "over budget",
                        "started": start + v * 3600,
                    }
                )
        db.execute(
            insert(schema.validation_runs),
            [
                {
                    "run_id": run_id,
                    "started": start + v * 3600,
                    "fleet": "lab",
                    "artifact": f"{models[v % len(models)][0]}.tflite",
                    "artifact_sha256": models[v % len(models)][1],
                    "passed": failed == 0,
                    "devices": len(DEVICES),
                    "failed_devices": min(failed, len(DEVICES)),
                }
            ],
        )
        db.execute(insert(schema.gate_results), rows)
    db.execute(
        insert(schema.artifacts),
        [
            {
                "sha256": sha,
                "parent_sha256": models[(i // len(VARIANTS)) * len(VARIANTS)][1]
                if i % len(VARIANTS)
                else None,
                "model_sha256": sha,
                "format": "tflite",
                "recipe_json": json.dumps([{"step": name.rsplit("-", 1)[-1]}]),
                "card_json": json.dumps({"size_kb": 100 + i, "macs": 1e6 * (i + 1)}),
                "created": start + i,
            }
            for i, (name, sha) in enumerate(models)
        ],
    )
    db.execute(
        insert(schema.tune_runs),
        [
            {
                "run_id": "tune-bench",
                "created": start,
                "host": "bench",
                "model": "ds-cnn",
                "strategy": "netadapt",
                "config_json": "{}",
            }
        ],
    )
    trials = []
    for n in range(200):
        latency = float(rng.uniform(1, 10))
        trials.append(
            {
                "run_id": "tune-bench",
                "key": f"k{n}",
                "number": n,
                "json": json.dumps(
                    {
                        "number": n,
                        "candidate": {
                            "recipe": [],
                            "threads": 0,
                            "params": {},
                            "kind": "trial",
                            "note": "",
                        },
                        "status": "ok",
                        "error": "",
                        "accuracy_pct": float(90 - latency + rng.normal()),
                        "worst": {"latency_p90_ms": latency},
                        "usage": {"latency_p90_ms": latency / 5.0},
                        "feasible": latency <= 5.0,
                        "violations": [],
                    }
                ),
            }
        )
    db.execute(insert(schema.trials), trials)


PAGES = [
    ("devices", "/devices"),
    ("measurements", "/measurements"),
    ("measurements filtered", "/measurements?device=nuc-01&model=ds-cnn-int8"),
    ("measurements page 500", "/measurements?page=500"),
    ("compare", "/compare?device=nuc-01&a=ds-cnn-fp32&b=ds-cnn-int8"),
    ("lineage list", "/lineage"),
    ("lineage artifact", "/lineage?sha=ds-cnn-int8"),
    ("tuning runs", "/tuning"),
    ("tuning run", "/tuning/tune-bench"),
    ("gates", "/gates"),
    ("history by tag", "/history?model=ds-cnn-int8&by=tag"),
    ("history by day", "/history?model=ds-cnn-int8&by=day"),
]


def _summary(times: list[float]) -> dict[str, Any]:
    """This run's figure for a page: the median of its requests, and the requests themselves
    (the fastest and slowest of this run, not a spread across runs)."""
    median = statistics.median(times)
    return {
        "median_ms": round(median, 1),
        "fastest_request_ms": round(min(times), 1),
        "slowest_request_ms": round(max(times), 1),
        "requests_ms": [round(t, 1) for t in times],
        "met": median < TARGET_MS,
    }


def time_pages(url: str, repeat: int) -> list[dict[str, Any]]:
    """Each page `repeat` times uncached (each request through a new app: new engine, nothing
    reused) and `repeat` times cached (one app after a first request of the page: the lists of
    what exists, reused for `views.LISTS_TTL_S`, and its noise tests come from memory)."""
    from fastapi.testclient import TestClient

    from toolkit.dashboard.app import create_app

    # Warm imports (plotly, scipy) once. Requests name 127.0.0.1: the Host is checked.
    with TestClient(create_app(url), base_url="http://127.0.0.1") as client:
        client.get("/history")
    results = []
    for name, path in PAGES:
        uncached = []
        for _ in range(repeat):
            with TestClient(create_app(url), base_url="http://127.0.0.1") as client:
                started = time.perf_counter()
                response = client.get(path)
                uncached.append((time.perf_counter() - started) * 1e3)
            if response.status_code != 200:
                raise RuntimeError(f"{path}: HTTP {response.status_code}: {response.text[:300]}")
        cached = []
        with TestClient(create_app(url), base_url="http://127.0.0.1") as client:
            client.get(path)
            for _ in range(repeat):
                started = time.perf_counter()
                client.get(path)
                cached.append((time.perf_counter() - started) * 1e3)
        results.append(
            {
                "page": name,
                "path": path,
                "bytes": len(response.content),
                "target_ms": TARGET_MS,
                "uncached": _summary(uncached),
                "cached": _summary(cached),
            }
        )
        print(
            f"{name}: uncached {results[-1]['uncached']['median_ms']} ms, cached "
            f"{results[-1]['cached']['median_ms']} ms",
            flush=True,
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--db", help="reuse this SQLite file (filled when absent)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.db) if args.db else Path(tmp) / "results.db"
        url = f"sqlite:///{path.resolve()}"
        fill_s, filled = 0.0, {}
        if not path.exists():
            started = time.perf_counter()
            filled = fill(url, args.rows)
            fill_s = time.perf_counter() - started
            print(f"filled {filled} in {fill_s:.0f} s", flush=True)
        pages = time_pages(url, args.repeat)
        with sqlite3.connect(path) as db:
            in_db = db.execute("SELECT count(*) FROM measurements").fetchone()[0]
        out = write_results(
            "dashboard",
            {
                "rows": in_db,
                "repeat": args.repeat,
                "fill": filled,
                "fill_s": round(fill_s, 1),
                "db_bytes": path.stat().st_size,
                "lists_ttl_s": LISTS_TTL_S,
                "pages": pages,
                "method": "in-process FastAPI TestClient; uncached: each request through a new "
                "app (new read-only engine, app caches empty; OS page cache warm); cached: one "
                "app after a first request of the page (the lists of what exists and history "
                "noise tests it computed reused); median_ms: the median of --repeat requests "
                "in this run; fastest/slowest_request_ms: this run's, not across runs",
            },
        )
        rows = [
            (
                p["page"],
                p["uncached"]["median_ms"],
                "met" if p["uncached"]["met"] else "MISSED",
                p["cached"]["median_ms"],
                "met" if p["cached"]["met"] else "MISSED",
            )
            for p in pages
        ]
        print_table(rows, ("page", "uncached ms", f"< {TARGET_MS:g}", "cached ms",
                           f"< {TARGET_MS:g}"))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()

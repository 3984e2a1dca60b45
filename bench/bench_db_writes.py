"""Rows per second written to the results database by concurrent writer processes:
PostgreSQL 15 (started here, durable: fsync and synchronous_commit on) vs SQLite (one shared
file, its journal mode and synchronous level as the results store's engine sets them, read
back and recorded).

Each writer is its own process with its own EDGELOOP_HOME, appending one real measurement
(profiled once on the local agent, carrying the agent's default number of raw samples, as a
row `profile` writes does) row by row through `ResultsStore.append` — one committed
transaction per row, as profile / tune / validate write — all starting at the same instant.
Rows/s = all rows / (last writer done - common start). Every row is counted back afterwards.

    python bench/bench_db_writes.py [--writers 4] [--rows 500]

`bench/bench_scale.py` calls `measure_db_writes()`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def default_samples() -> int:
    """Raw latency samples a row carries by default: the agent's `keep_samples` default, read
    from the one place it is stated (a row as `profile` writes it with default options)."""
    from device_agent.measure.options import DEFAULTS

    return DEFAULTS.keep_samples

WORKER = """
import json, sys, time
from toolkit.measurement import Measurement
from toolkit.results.store import ResultsStore
record = Measurement.from_json(json.loads(open(sys.argv[1]).read()))
rows, go = int(sys.argv[3]), float(sys.argv[4])
store = ResultsStore()  # EDGELOOP_DB; opened (and migrated) before the start
while time.time() < go:
    time.sleep(0.001)
for i in range(rows):
    store.append(record, run_id=sys.argv[2], extra={"i": i})
print(json.dumps({"done": time.time()}))
"""


def real_measurement(folder: Path) -> Any:
    """One measurement of a tiny CNN (.onnx) on the local agent: the row every writer writes.
    It runs as many times as a row keeps samples by default, so the row carries that many
    (keep_samples is left at the agent's default)."""
    from tests.model_files import build_onnx, tiny_cnn
    from toolkit.measurement import BenchmarkOptions
    from toolkit.profiling import profile_model

    model = build_onnx(tiny_cnn(), folder / "tiny.onnx")
    samples = default_samples()
    options = BenchmarkOptions(warmup_runs=3, min_runs=samples, min_seconds=0.2, idle_seconds=0)
    found = profile_model(model, "local", options, store=False)
    kept = len(found.latency.samples_ms) if found.ok and found.latency else 0
    if kept != samples:
        raise RuntimeError(f"the row carries {kept} raw samples, expected the default {samples}")
    return found


def sqlite_settings(url: str) -> str:
    """The journal mode and synchronous level a results-store connection to `url` has, as
    the engine configures it (read back, not restated)."""
    from toolkit.db.engine import get_engine

    with get_engine(url).connect() as conn:
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
        level = conn.exec_driver_sql("PRAGMA synchronous").scalar()
    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    return f"journal_mode={str(mode).upper()}, synchronous={names.get(level, level)}"


def run_writers(url: str, record_file: Path, writers: int, rows: int, folder: Path) -> dict:
    """Starts `writers` processes against `url`; returns rows/s and the rows counted back."""
    from toolkit.results.store import ResultsStore

    ResultsStore(url)  # the schema exists before the clock starts
    go = time.time() + 8.0  # every writer has imported and opened its store by then
    procs = []
    for n in range(writers):
        env = {
            **os.environ,
            "EDGELOOP_DB": url,
            "EDGELOOP_HOME": str(folder / f"home-{n}"),
            "PYTHONPATH": str(ROOT),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER, str(record_file), f"writer-{n}", str(rows), str(go)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
        )
    ends = []
    for proc in procs:
        out, err = proc.communicate(timeout=1800)
        if proc.returncode:
            raise RuntimeError(f"writer failed: {err[-2000:]}")
        ends.append(json.loads(out.strip().splitlines()[-1])["done"])
    if time.time() < go or min(ends) < go:
        raise RuntimeError("a writer started late: raise the start delay")
    seconds = max(ends) - go
    counted = len(ResultsStore(url).query())
    return {
        "writers": writers,
        "rows_per_writer": rows,
        "rows_counted": counted,
        "rows_lost": writers * rows - counted,
        "seconds": round(seconds, 3),
        "rows_per_s": round(writers * rows / seconds, 1),
    }


def measure_db_writes(writers: int = 4, rows: int = 500) -> dict[str, Any]:
    """Rows/s by `writers` concurrent writer processes to PostgreSQL and to SQLite.

    Returns:
        {"postgresql": {...}, "sqlite": {...}, "method": "..."}; PostgreSQL's entry is
        {"skipped": reason} where no server can be started (not root, not installed).
    """
    from tests.fixtures_postgres import running_postgres, unavailable

    folder = Path(tempfile.mkdtemp(prefix="edgeloop-bench-db-"))
    os.environ.setdefault("EDGELOOP_HOME", str(folder / "home"))
    record_file = folder / "record.json"
    record_file.write_text(json.dumps(real_measurement(folder).to_json()))
    sqlite_url = f"sqlite:///{folder / 'shared' / 'results.db'}"
    sqlite = run_writers(sqlite_url, record_file, writers, rows, folder / "sqlite")
    settings = sqlite_settings(sqlite_url)
    out: dict[str, Any] = {
        "method": f"{writers} processes x {rows} rows, one committed transaction per row "
        f"(ResultsStore.append, {default_samples():,} raw samples in each record, the "
        "agent's default keep_samples); PostgreSQL fsync+synchronous_commit on; SQLite "
        f"{settings} (as the results store's engine sets it)",
        "samples_per_row": default_samples(),
        "sqlite": {**sqlite, "settings": settings},
    }
    reason = unavailable()
    if reason:
        out["postgresql"] = {"skipped": reason}
    else:
        with running_postgres(durable=True) as server:
            url = server.create_database("bench")
            out["postgresql"] = run_writers(url, record_file, writers, rows, folder / "pg")
    return out


def main() -> None:
    from bench.common import print_table, write_results

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--rows", type=int, default=500, help="rows per writer")
    args = parser.parse_args()
    found = measure_db_writes(args.writers, args.rows)
    rows = [
        (
            name,
            found[name].get("rows_per_s", "-"),
            found[name].get("rows_lost", "-"),
            found[name].get("seconds", found[name].get("skipped", "")),
        )
        for name in ("postgresql", "sqlite")
    ]
    print_table(rows, ("database", "rows/s", "lost", "seconds"))
    print(f"wrote {write_results('bench_db_writes', found)}")


if __name__ == "__main__":
    main()

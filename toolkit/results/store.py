"""The results store: every measurement, as it arrives, in SQLite (read back with pandas).

One row per measurement with its provenance (device, runtime and version, threads, model
sha and name, options, toolkit/agent/protocol versions, time) and every statistic; the full
record (raw samples included) is kept as JSON beside the flat columns.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any, Optional, Union

import pandas as pd

from toolkit.measurement import BenchmarkOptions, Measurement
from toolkit.paths import edgeloop_home

SCHEMA_VERSION = 1
_FLAT = [
    "timestamp",
    "ok",
    "error_kind",
    "error_message",
    "device_id",
    "device_hostname",
    "device_arch",
    "model_sha256",
    "model_name",
    "runtime",
    "runtime_version",
    "threads",
    "accelerator",
    "n",
    "mean_ms",
    "std_ms",
    "cv",
    "min_ms",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "load_ms",
    "first_inference_ms",
    "peak_rss_mb",
    "model_size_bytes",
    "tflm_arena_bytes",
    "power_sensor",
    "mean_w",
    "idle_w",
    "energy_mj",
    "warnings",
    "toolkit_version",
    "agent_version",
    "protocol_version",
]


class ResultsStore:
    """SQLite-backed store; safe to use from several threads of one process.

    Args:
        path: database file; default `<edgeloop home>/results.db`.
    """

    def __init__(self, path: Optional[Union[str, Path]] = None) -> None:
        self.path = Path(path) if path else edgeloop_home() / "results.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._wal = False
        with self._connect() as db:
            cols = ", ".join(f"{c}" for c in _FLAT)
            db.execute(
                f"CREATE TABLE IF NOT EXISTS measurements (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                f"run_id TEXT, options_json TEXT, record_json TEXT, extra_json TEXT, {cols})"
            )
            db.execute(
                "CREATE INDEX IF NOT EXISTS by_model ON measurements (model_sha256, device_id)"
            )
            db.execute("CREATE INDEX IF NOT EXISTS by_run ON measurements (run_id)")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        if not self._wal:
            # Switching the journal mode takes an exclusive lock and does not wait on a busy
            # database (SQLITE_BUSY at once): done once per store; a concurrent writer that
            # holds the lock has already made the file WAL, which persists in the file.
            try:
                db.execute("PRAGMA journal_mode=WAL")
                self._wal = True
            except sqlite3.OperationalError:
                pass
        return db

    def append(
        self,
        measurement: Measurement,
        run_id: Optional[str] = None,
        extra: Optional[dict[str, Any]] = None,
    ) -> int:
        """Writes one measurement now (committed before returning); returns its row id."""
        row = measurement.to_row()
        values = [row[c] for c in _FLAT]
        names = ["run_id", "options_json", "record_json", "extra_json", *_FLAT]
        params = [
            run_id,
            (measurement.requested_options or measurement.options).key(),
            json.dumps(measurement.to_json()),
            json.dumps(extra or {}, sort_keys=True, default=str),
            *values,
        ]
        sql = (
            f"INSERT INTO measurements ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
        )
        with self._lock, self._connect() as db:
            cur = db.execute(sql, params)
            return int(cur.lastrowid)

    def query(
        self,
        device: Optional[str] = None,
        model: Optional[str] = None,
        run_id: Optional[str] = None,
    ) -> pd.DataFrame:
        """Rows as a DataFrame, oldest first. `model` matches a sha256 prefix or a model name."""
        where, params = [], []
        if device:
            where.append("(device_id = ? OR device_hostname = ?)")
            params += [device, device]
        if model:
            where.append("(model_sha256 LIKE ? OR model_name = ?)")
            params += [f"{model}%", model]
        if run_id:
            where.append("run_id = ?")
            params.append(run_id)
        sql = (
            "SELECT id, run_id, options_json, extra_json, "
            + ", ".join(_FLAT)
            + " FROM measurements"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id"
        with self._connect() as db:
            frame = pd.read_sql_query(sql, db, params=params)
        frame["ok"] = frame["ok"].astype(bool)
        return frame

    def record(self, row_id: int) -> Measurement:
        """The full measurement (raw samples included) stored under a row id."""
        with self._connect() as db:
            found = db.execute(
                "SELECT record_json FROM measurements WHERE id = ?", (row_id,)
            ).fetchone()
        if found is None:
            raise KeyError(f"no measurement with id {row_id} in {self.path}")
        return Measurement.from_json(json.loads(found[0]))

    def find(
        self, model_sha256: str, device_id: str, options: BenchmarkOptions
    ) -> Optional[Measurement]:
        """The latest successful measurement of that model on that device with those options."""
        with self._connect() as db:
            found = db.execute(
                "SELECT record_json FROM measurements WHERE model_sha256 = ? AND device_id = ? "
                "AND options_json = ? AND ok = 1 ORDER BY id DESC LIMIT 1",
                (model_sha256, device_id, options.key()),
            ).fetchone()
        return Measurement.from_json(json.loads(found[0])) if found else None

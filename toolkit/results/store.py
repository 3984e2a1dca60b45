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
from typing import TYPE_CHECKING, Any, Optional, Union

from toolkit.errors import ResultsStoreError
from toolkit.measurement import COLUMNS, BenchmarkOptions, Measurement
from toolkit.paths import edgeloop_home

if TYPE_CHECKING:  # imported when a query needs it: appending a row stays cheap (CLI start)
    import pandas as pd

SCHEMA_VERSION = 2
"""`PRAGMA user_version` of the database this code writes. v1: the first 36 flat columns;
v2: the columns of every field of `toolkit.measurement`'s types (device state, thermal, power
details). An older database gains its missing columns when opened; a newer one is refused."""
FIXED = {  # columns that are not measurement fields
    "run_id": "TEXT",  # groups rows (a tuning run, a validation)
    "options_json": "TEXT",  # the options as asked, `BenchmarkOptions.key()`: the cache key
    "record_json": "TEXT",  # the whole Measurement, raw samples included (`to_json()`)
    "extra_json": "TEXT",  # what the caller added (device profile, trial, ...)
}
_FLAT = [column.name for column in COLUMNS]


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
        self._open()

    def _open(self) -> None:
        """Creates the table, or brings an older one up to SCHEMA_VERSION (ALTER TABLE ADD
        COLUMN for each column it lacks; existing rows read NULL there).

        Raises:
            ResultsStoreError: the database was written by a newer edgeloop.
        """
        db = self._connect()
        db.isolation_level = None  # explicit transaction: one opener migrates at a time
        try:
            db.execute("BEGIN IMMEDIATE")
            found = db.execute("PRAGMA user_version").fetchone()[0]
            if found > SCHEMA_VERSION:
                raise ResultsStoreError(
                    f"{self.path}: results store schema v{found} is newer than this edgeloop "
                    f"knows (v{SCHEMA_VERSION}); upgrade edgeloop, or use another store "
                    "(EDGELOOP_HOME)"
                )
            typed = {**FIXED, **{c.name: c.sql_type for c in COLUMNS}}
            cols = ", ".join(f"{name} {sql}" for name, sql in typed.items())
            db.execute(
                "CREATE TABLE IF NOT EXISTS measurements "
                f"(id INTEGER PRIMARY KEY AUTOINCREMENT, {cols})"
            )
            have = {row[1] for row in db.execute("PRAGMA table_info(measurements)")}
            for name, sql in typed.items():
                if name not in have:
                    db.execute(f"ALTER TABLE measurements ADD COLUMN {name} {sql}")
            db.execute(
                "CREATE INDEX IF NOT EXISTS by_model ON measurements (model_sha256, device_id)"
            )
            db.execute("CREATE INDEX IF NOT EXISTS by_run ON measurements (run_id)")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

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
        names = [*FIXED, *_FLAT]
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
            import pandas as pd

            frame = pd.read_sql_query(sql, db, params=params)
        for column in COLUMNS:  # 0/1 (NULL in rows older than the column) as booleans
            if column.boolean:
                frame[column.name] = frame[column.name].astype("boolean")
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

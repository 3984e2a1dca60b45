"""The run's own SQLite file: every trial, measurement, build and accuracy, written at once.

Each write is its own committed transaction, so a host killed with `kill -9` loses at most the
trial it was working on. On resume the runner answers stored trials from here, and a trial
interrupted half-way finds its build, its measurements and its accuracy here instead of
making them again.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any, Optional

from toolkit.measurement import Measurement
from toolkit.search.base import Trial

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS trials (key TEXT PRIMARY KEY, number INTEGER, json TEXT)",
    "CREATE TABLE IF NOT EXISTS measurements (device_id TEXT, sha256 TEXT, options TEXT, "
    "json TEXT, PRIMARY KEY (device_id, sha256, options))",
    "CREATE TABLE IF NOT EXISTS builds (recipe_key TEXT PRIMARY KEY, json TEXT)",
    "CREATE TABLE IF NOT EXISTS accuracy (sha256 TEXT, evaluated_on TEXT, json TEXT, "
    "PRIMARY KEY (sha256, evaluated_on))",
)


class TrialDB:
    """SQLite file `trials.sqlite` in the run folder; safe across threads of one process.

    Args:
        path: the database file (created with its folder when missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._lock, self._connect() as db:
            for statement in SCHEMA:
                db.execute(statement)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def _put(self, sql: str, params: tuple) -> None:
        with self._lock, self._connect() as db:
            db.execute(sql, params)

    def _get(self, sql: str, params: tuple) -> Optional[Any]:
        with self._lock, self._connect() as db:
            row = db.execute(sql, params).fetchone()
        return json.loads(row[0]) if row else None

    # -- trials --------------------------------------------------------------------------
    def put_trial(self, trial: Trial) -> None:
        self._put("INSERT OR REPLACE INTO trials VALUES (?, ?, ?)",
                  (trial.candidate.key, trial.number, json.dumps(trial.to_json())))

    def trials(self) -> list[Trial]:
        """Every stored trial, in trial-number order."""
        with self._lock, self._connect() as db:
            rows = db.execute("SELECT json FROM trials ORDER BY number").fetchall()
        return [Trial.from_json(json.loads(r[0])) for r in rows]

    # -- measurements (the per-run cache; the results store is the cross-run one) -----------
    def put_measurement(self, device_id: str, options_key: str, m: Measurement) -> None:
        self._put("INSERT OR REPLACE INTO measurements VALUES (?, ?, ?, ?)",
                  (device_id, m.model_sha256, options_key, json.dumps(m.to_json())))

    def measurement(self, device_id: str, sha256: str, options_key: str) -> Optional[Measurement]:
        raw = self._get(
            "SELECT json FROM measurements WHERE device_id=? AND sha256=? AND options=?",
            (device_id, sha256, options_key),
        )
        return Measurement.from_json(raw) if raw else None

    def measurements(self) -> list[Measurement]:
        with self._lock, self._connect() as db:
            rows = db.execute("SELECT json FROM measurements").fetchall()
        return [Measurement.from_json(json.loads(r[0])) for r in rows]

    # -- builds and accuracy -------------------------------------------------------------
    def put_build(self, recipe_key: str, record: dict[str, Any]) -> None:
        self._put("INSERT OR REPLACE INTO builds VALUES (?, ?)", (recipe_key, json.dumps(record)))

    def build(self, recipe_key: str) -> Optional[dict[str, Any]]:
        return self._get("SELECT json FROM builds WHERE recipe_key=?", (recipe_key,))

    def put_accuracy(self, sha256: str, evaluated_on: str, record: dict[str, Any]) -> None:
        self._put("INSERT OR REPLACE INTO accuracy VALUES (?, ?, ?)",
                  (sha256, evaluated_on, json.dumps(record)))

    def accuracy(self, sha256: str, evaluated_on: str) -> Optional[dict[str, Any]]:
        return self._get("SELECT json FROM accuracy WHERE sha256=? AND evaluated_on=?",
                         (sha256, evaluated_on))

"""A tuning run's trials, measurements, builds and accuracy, in the results database, keyed by
the run id, written at once.

Each write is its own committed transaction, so a host killed with `kill -9` loses at most the
trial it was working on. Every write is an upsert keyed by the run id and the row's own key, so
one retried after the database went away (`toolkit.db.engine.write`) is stored once. On
resume (`edgeloop tune --resume RUN_ID`, from this host or any other pointed at the same
database) the runner answers stored trials from here, and a trial interrupted half-way finds
its build, its measurements and its accuracy here instead of making them again. The run's
folder keeps `trials.sqlite`, a small SQLite file naming the database and run id its trials
live under (where earlier versions kept the trials themselves).
"""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any, Optional, Union

from sqlalchemy import Connection, select

from toolkit.db import schema
from toolkit.db.engine import get_engine, read, write
from toolkit.db.labels import current_tag
from toolkit.db.upgrade import ensure_current
from toolkit.db.upsert import upsert
from toolkit.measurement import Measurement
from toolkit.search.base import Trial

RUN_FILE = "run.json"  # toolkit.tune.config writes it; a run's row keeps a copy


class TrialDB:
    """One tuning run's store; safe across threads, processes and hosts.

    Args:
        path: `<run folder>/trials.sqlite`; the folder's name is the run id.
        url: the database (default `toolkit.db.engine.resolve_url()`).
    """

    def __init__(self, path: Path, url: Optional[Union[str, Path]] = None) -> None:
        self.path = Path(path)
        self.run_id = self.path.parent.name
        self.engine = get_engine(url)
        ensure_current(self.engine)
        self._register()

    def _register(self) -> None:
        """Records the run (its run.json, host, tag) and leaves the pointer file."""
        config_file = self.path.parent / RUN_FILE
        if config_file.is_file():
            text = config_file.read_text()
            config = json.loads(text)
            values = {
                "run_id": self.run_id,
                "created": time.time(),
                "host": socket.gethostname(),
                "tag": current_tag(),
                "model": str(config.get("model", "")),
                "strategy": str(config.get("strategy", "")),
                "config_json": text,
            }

            def register(conn: Connection) -> None:
                t = schema.tune_runs
                found = conn.execute(select(t.c.run_id).where(t.c.run_id == self.run_id))
                if found.first() is None:
                    upsert(conn, t, values)
                    return
                changed = {"config_json": text} | ({"tag": values["tag"]} if values["tag"] else {})
                conn.execute(t.update().where(t.c.run_id == self.run_id).values(changed))

            write(self.engine, register)
        if self.path.parent.is_dir() and not self.path.exists():
            self._write_pointer()

    def _write_pointer(self) -> None:
        where = self.engine.url.render_as_string(hide_password=True)
        with contextlib.closing(sqlite3.connect(self.path)) as db:
            db.execute("CREATE TABLE IF NOT EXISTS trials_live_in (database TEXT, run_id TEXT)")
            db.execute("INSERT INTO trials_live_in VALUES (?, ?)", (where, self.run_id))
            db.commit()

    def _put(self, table: Any, values: dict[str, Any]) -> None:
        write(self.engine, lambda conn: upsert(conn, table, {"run_id": self.run_id, **values}))

    def _get(self, table: Any, **keys: Any) -> Optional[Any]:
        sql = select(table.c.json).where(table.c.run_id == self.run_id)
        for name, value in keys.items():
            sql = sql.where(table.c[name] == value)
        found = read(self.engine, lambda conn: conn.execute(sql).scalar())
        return json.loads(found) if found is not None else None

    # -- trials --------------------------------------------------------------------------
    def put_trial(self, trial: Trial) -> None:
        self._put(
            schema.trials,
            {"key": trial.candidate.key, "number": trial.number, "json": _dump(trial.to_json())},
        )

    def trials(self) -> list[Trial]:
        """Every stored trial, in trial-number order."""
        t = schema.trials
        sql = select(t.c.json).where(t.c.run_id == self.run_id).order_by(t.c.number)
        rows = read(self.engine, lambda conn: conn.execute(sql).scalars().all())
        return [Trial.from_json(json.loads(r)) for r in rows]

    # -- measurements (the per-run cache; the results store is the cross-run one) -----------
    def put_measurement(self, device_id: str, options_key: str, m: Measurement) -> None:
        self._put(
            schema.trial_measurements,
            {
                "device_id": device_id,
                "sha256": m.model_sha256,
                "options": options_key,
                "json": _dump(m.to_json()),
            },
        )

    def measurement(self, device_id: str, sha256: str, options_key: str) -> Optional[Measurement]:
        raw = self._get(
            schema.trial_measurements, device_id=device_id, sha256=sha256, options=options_key
        )
        return Measurement.from_json(raw) if raw else None

    def measurements(self) -> list[Measurement]:
        t = schema.trial_measurements
        sql = select(t.c.json).where(t.c.run_id == self.run_id)
        rows = read(self.engine, lambda conn: conn.execute(sql).scalars().all())
        return [Measurement.from_json(json.loads(r)) for r in rows]

    # -- builds and accuracy -------------------------------------------------------------
    def put_build(self, recipe_key: str, record: dict[str, Any]) -> None:
        """Stores a build, and marks its artifact's lineage row as built by this run."""
        from toolkit.db.lineage import claim_artifact

        self._put(schema.builds, {"recipe_key": recipe_key, "json": _dump(record)})
        if record.get("sha256"):
            claim_artifact(self.engine, str(record["sha256"]), self.run_id)

    def build(self, recipe_key: str) -> Optional[dict[str, Any]]:
        return self._get(schema.builds, recipe_key=recipe_key)

    def put_accuracy(self, sha256: str, evaluated_on: str, record: dict[str, Any]) -> None:
        self._put(
            schema.accuracy, {"sha256": sha256, "evaluated_on": evaluated_on, "json": _dump(record)}
        )

    def accuracy(self, sha256: str, evaluated_on: str) -> Optional[dict[str, Any]]:
        return self._get(schema.accuracy, sha256=sha256, evaluated_on=evaluated_on)


def _dump(value: Any) -> str:
    return json.dumps(value)

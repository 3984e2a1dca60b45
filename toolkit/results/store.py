"""The results store: every measurement, as it arrives, in the results database (read back
with pandas).

One row per measurement with its provenance (device, runtime and version, threads, model
sha and name, options, toolkit/agent/protocol versions, time), every statistic and the user's
`tag`; the full record (raw samples included) is kept as JSON beside the flat columns. The
table is `toolkit.db.schema.measurements`; which database is `toolkit.db.engine.resolve_url()`
(SQLite under `EDGELOOP_HOME` by default, `EDGELOOP_DB` for a shared PostgreSQL).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from sqlalchemy import Connection, or_, select

from toolkit.db.engine import get_engine, read, write
from toolkit.db.labels import current_tag
from toolkit.db.schema import FIXED, SCHEMA_VERSION
from toolkit.db.schema import measurements as table
from toolkit.db.upgrade import ensure_current, where
from toolkit.measurement import COLUMNS, BenchmarkOptions, Measurement

if TYPE_CHECKING:  # imported when a query needs it: appending a row stays cheap (CLI start)
    import pandas as pd

__all__ = ["FIXED", "SCHEMA_VERSION", "ResultsStore"]

_FLAT = [column.name for column in COLUMNS]
_BOOLEAN = [column.name for column in COLUMNS if column.boolean]


class ResultsStore:
    """The measurements table of one database; safe across threads and processes.

    Args:
        path: a database URL, or a SQLite file path; default `toolkit.db.engine.resolve_url()`
            (`EDGELOOP_DB`, else `<edgeloop home>/results.db`).
        tag: the label of the rows `append` writes; default `toolkit.db.labels.current_tag()`
            (the CLI's `--tag`).

    Raises:
        ResultsStoreError: the database was written by a newer edgeloop, or cannot be reached.
    """

    def __init__(self, path: Optional[Union[str, Path]] = None, tag: Optional[str] = None) -> None:
        self.engine = get_engine(path)
        self.url = self.engine.url.render_as_string(hide_password=True)
        sqlite_file = self.engine.url.get_backend_name() == "sqlite"
        self.path = Path(where(self.engine)) if sqlite_file else None  # the SQLite file
        self.tag = tag if tag is not None else current_tag()
        ensure_current(self.engine)

    def append(
        self,
        measurement: Measurement,
        run_id: Optional[str] = None,
        extra: Optional[dict[str, Any]] = None,
    ) -> int:
        """Writes one measurement now (committed before returning), once even when the
        database went away and the write was retried; returns its row id."""
        row = measurement.to_row()
        values: dict[str, Any] = {
            name: int(value) if isinstance(value, bool) else value for name, value in row.items()
        }
        values.update(
            run_id=run_id,
            options_json=(measurement.requested_options or measurement.options).key(),
            record_json=json.dumps(measurement.to_json()),
            extra_json=json.dumps(extra or {}, sort_keys=True, default=str),
            tag=self.tag,
        )

        def insert(conn: Connection) -> int:
            return int(conn.execute(table.insert().values(values)).inserted_primary_key[0])

        return write(self.engine, insert)

    def query(
        self,
        device: Optional[str] = None,
        model: Optional[str] = None,
        run_id: Optional[str] = None,
        tag: Optional[str] = None,
    ) -> pd.DataFrame:
        """Rows as a DataFrame, oldest first. `model` matches a sha256 prefix or a model name."""
        import pandas as pd

        c = table.c
        names = ["id", "run_id", "options_json", "extra_json", "tag", *_FLAT]
        sql = select(*(c[name] for name in names)).order_by(c.id)
        if device:
            sql = sql.where(or_(c.device_id == device, c.device_hostname == device))
        if model:
            sql = sql.where(or_(c.model_sha256.startswith(model), c.model_name == model))
        if run_id:
            sql = sql.where(c.run_id == run_id)
        if tag:
            sql = sql.where(c.tag == tag)
        frame = pd.DataFrame(read(self.engine, lambda conn: conn.execute(sql).all()), columns=names)
        frame = frame.astype(object).where(frame.notna(), None)
        for name in _FLAT:  # numbers as numbers even where every row is NULL
            if table.c[name].type.python_type in (int, float) and name not in _BOOLEAN:
                frame[name] = pd.to_numeric(frame[name])
        for name in _BOOLEAN:  # 0/1 (NULL in rows older than the column) as booleans
            frame[name] = frame[name].astype("boolean")
        frame["id"] = frame["id"].astype("int64")
        frame["ok"] = frame["ok"].astype(bool)
        return frame

    def record(self, row_id: int) -> Measurement:
        """The full measurement (raw samples included) stored under a row id."""
        sql = select(table.c.record_json).where(table.c.id == int(row_id))
        found = read(self.engine, lambda conn: conn.execute(sql).scalar())
        if found is None:
            raise KeyError(f"no measurement with id {row_id} in {self.url}")
        return Measurement.from_json(json.loads(found))

    def find(
        self, model_sha256: str, device_id: str, options: BenchmarkOptions
    ) -> Optional[Measurement]:
        """The latest successful measurement of that model on that device with those options."""
        c = table.c
        sql = (
            select(c.record_json)
            .where(c.model_sha256 == model_sha256, c.device_id == device_id)
            .where(c.options_json == options.key(), c.ok == 1)
            .order_by(c.id.desc())
            .limit(1)
        )
        found = read(self.engine, lambda conn: conn.execute(sql).scalar())
        return Measurement.from_json(json.loads(found)) if found else None

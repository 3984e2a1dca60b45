"""Bringing a database to this client's schema: on first use in a process, and by
`edgeloop db upgrade`.

One transaction, under a lock (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: an advisory lock), so
two processes opening a new database at once migrate it once:
1. refuse a database whose revision this client does not know (a newer edgeloop wrote it),
   naming both revisions;
2. `alembic upgrade head` (a sqlite3-era results.db has no alembic_version: revision v2
   adopts it with its rows);
3. add the measurement columns `toolkit.measurement.COLUMNS` has and the table lacks;
4. SQLite: mirror the version into `PRAGMA user_version` (the sqlite3-era check).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Optional

from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import SQLAlchemyError

from toolkit.db import schema
from toolkit.db.engine import read, write
from toolkit.errors import ResultsStoreError

if TYPE_CHECKING:  # Alembic is imported only when a database needs migrating (CLI start)
    from alembic.config import Config
    from alembic.script import ScriptDirectory

_ADVISORY_LOCK = 0x6564_6765_6C6F_6F70 >> 1  # "edgeloop", within bigint
_current: set[tuple[int, str]] = set()
_lock = threading.Lock()


@dataclass(frozen=True)
class Revisions:
    """What `upgrade()` found and left: Alembic revision ids (None: an empty database)."""

    before: Optional[str]
    after: str


def alembic_config() -> Config:
    """An Alembic configuration on the migrations shipped inside the package."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(resources.files("toolkit.db") / "migrations"))
    return config


def head_revision() -> str:
    """The revision this client writes (`schema.revision_id(SCHEMA_VERSION)`)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def where(engine: Engine) -> str:
    """The database's name for messages: a SQLite file's path, else the URL sans password."""
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database:
        return url.database
    return url.render_as_string(hide_password=True)


def current_revision(engine: Engine) -> Optional[str]:
    """The database's Alembic revision; None for an empty (or sqlite3-era) database."""
    return read(engine, _stored_revision)


def _stored_revision(conn: Connection) -> Optional[str]:
    """alembic_version's one row, read with plain SQL (no Alembic import)."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def ensure_current(engine: Engine) -> None:
    """Upgrades `engine`'s database fully on first use in a process; later calls only read
    its revision (one query) and upgrade again if it changed.

    Raises:
        ResultsStoreError: the database is newer than this client, or cannot be reached.
    """
    key = (id(engine), str(engine.url))
    try:
        if _at_head(engine, complete=key not in _current):
            _current.add(key)
            return
    except SQLAlchemyError as exc:
        raise unusable(engine, exc) from exc
    with _lock:
        upgrade(engine)
        _current.add(key)


def _at_head(engine: Engine, complete: bool) -> bool:
    """At this client's revision (and, with `complete`, no measurement column missing)."""
    return read(engine, lambda conn: _conn_at_head(conn, complete))


def _conn_at_head(conn: Connection, complete: bool) -> bool:
    found = _stored_revision(conn)
    mirrored = schema.SCHEMA_VERSION
    if conn.dialect.name == "sqlite":
        mirrored = conn.exec_driver_sql("PRAGMA user_version").scalar()
    at_head = found == schema.revision_id(schema.SCHEMA_VERSION) and (
        mirrored == schema.SCHEMA_VERSION
    )
    if at_head and complete:
        have = {c["name"] for c in inspect(conn).get_columns("measurements")}
        at_head = {c.name for c in schema.measurements.columns} <= have
    return at_head


def upgrade(engine: Engine, revision: str = "head") -> Revisions:
    """Brings the database to `revision` (default: this client's head); see the module doc.

    Raises:
        ResultsStoreError: the database is at a revision this client does not know.
    """
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = alembic_config()
    scripts = ScriptDirectory.from_config(config)
    head = scripts.get_current_head()

    def work(conn: Connection) -> Revisions:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK})
        before = MigrationContext.configure(conn).get_current_revision()
        _refuse_newer(conn, engine, before, scripts, head)
        if before != revision and not (revision == "head" and before == head):
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
        after = MigrationContext.configure(conn).get_current_revision()
        if after == head:
            _add_generated_columns(conn)
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql(f"PRAGMA user_version = {schema.SCHEMA_VERSION}")
        return Revisions(before, after)

    try:
        return write(engine, work)
    except SQLAlchemyError as exc:  # a database that cannot be reached or read: one line
        raise unusable(engine, exc) from exc


def unusable(engine: Engine, exc: SQLAlchemyError) -> ResultsStoreError:
    """The one-line error for a database the driver could not use (unreachable, refused)."""
    reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
    return ResultsStoreError(f"results database {where(engine)}: {reason}")


def _refuse_newer(
    conn: Connection, engine: Engine, found: Optional[str], scripts: ScriptDirectory, head: str
) -> None:
    mirrored = 0
    if conn.dialect.name == "sqlite":
        mirrored = conn.exec_driver_sql("PRAGMA user_version").scalar() or 0
    known = found is None or _known(scripts, found)
    if known and mirrored <= schema.SCHEMA_VERSION:
        return
    theirs = found if not known else schema.revision_id(mirrored)
    raise ResultsStoreError(
        f"{where(engine)}: results database schema {theirs} is newer than this edgeloop's "
        f"{head}; upgrade edgeloop, or point --db / EDGELOOP_DB at another database"
    )


def _known(scripts: ScriptDirectory, revision: str) -> bool:
    try:
        return scripts.get_revision(revision) is not None
    except Exception:  # noqa: BLE001 - alembic.util.CommandError: unknown revision
        return False


def _add_generated_columns(conn: Connection) -> None:
    """Measurement fields added since the last revision become nullable columns."""
    have = {c["name"] for c in inspect(conn).get_columns("measurements")}
    for column in schema.measurements.columns:
        if column.name not in have:
            kind = column.type.compile(dialect=conn.dialect)
            name = conn.dialect.identifier_preparer.quote(column.name)
            conn.exec_driver_sql(f"ALTER TABLE measurements ADD COLUMN {name} {kind}")

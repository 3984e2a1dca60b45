"""Which database, and one engine per database per process.

The URL has one owner, `resolve_url()`: an explicit URL (the CLI's `--db`, which
`select_url()` publishes to the process and its children as `EDGELOOP_DB`) > the
`EDGELOOP_DB` environment variable > `sqlite:///<EDGELOOP_HOME>/results.db`.

SQLite runs in WAL mode with a busy timeout; its write transactions start with
`BEGIN IMMEDIATE`, so two writers queue instead of failing half-way. PostgreSQL is reached
through psycopg 3 (`postgresql+psycopg://`; a plain `postgresql://` is read as that).
`write()` retries a transaction the database refused for contention, so concurrent writers
lose nothing.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional, TypeVar, Union

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError

from toolkit.errors import ResultsStoreError, SetupError
from toolkit.paths import edgeloop_home

ENV_VAR = "EDGELOOP_DB"
DB_FILE = "results.db"
BUSY_TIMEOUT_MS = 30_000
"""How long a SQLite writer waits for the lock before the database says busy."""
RETRIES = 8
"""Attempts of one write transaction refused for contention (busy, deadlock, serialization)."""

EXPECTED = "expected e.g. sqlite:///path/results.db or postgresql+psycopg://user@host:5432/db"
T = TypeVar("T")


class DatabaseURLError(ResultsStoreError, SetupError):
    """`--db` / `EDGELOOP_DB` is not a database URL edgeloop can use (exit code 2)."""


_engines: dict[tuple[int, str], Engine] = {}
_lock = threading.Lock()


def select_url(url: Optional[str]) -> None:
    """Makes `url` this process's database (and its children's, through `EDGELOOP_DB`)."""
    if url:
        os.environ[ENV_VAR] = normalize_url(url)


def resolve_url(url: Optional[Union[str, Path]] = None) -> str:
    """The database URL: `url` (a URL or a SQLite file path) > `EDGELOOP_DB` > the default
    `sqlite:///<EDGELOOP_HOME>/results.db`."""
    chosen = url or os.environ.get(ENV_VAR) or Path(edgeloop_home()) / DB_FILE
    return normalize_url(chosen)


def normalize_url(url: Union[str, Path]) -> str:
    """A SQLAlchemy URL for `url`: a file path becomes `sqlite:///<absolute path>`,
    `postgresql://` becomes `postgresql+psycopg://`.

    Raises:
        DatabaseURLError: not a URL SQLAlchemy can read (a SetupError: exit code 2).
    """
    text = str(url)
    if "://" not in text:
        return f"sqlite:///{Path(text).expanduser().resolve()}"
    if text.startswith(("postgresql://", "postgres://")):
        text = "postgresql+psycopg://" + text.split("://", 1)[1]
    try:
        make_url(text)
    except ArgumentError:
        raise DatabaseURLError(f"results database URL {text!r}: {EXPECTED}") from None
    return text


def display_url(url: str) -> str:
    """`url` with its password hidden, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


def get_engine(url: Optional[Union[str, Path]] = None) -> Engine:
    """The engine for `url` (see `resolve_url`), made once per process (a forked child makes
    its own: connections do not survive a fork)."""
    resolved = resolve_url(url)
    key = (os.getpid(), resolved)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _make_engine(resolved)
            _engines[key] = engine
    return engine


def _make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        _sqlite_setup(engine)
        return engine
    try:
        return create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=4)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise DatabaseURLError(
            f"results database URL {parsed.render_as_string(hide_password=True)!r}: {exc}; "
            f"{EXPECTED}"
        ) from None


def _sqlite_setup(engine: Engine) -> None:
    """WAL, busy timeout, and transactions SQLAlchemy begins itself (pysqlite's own are off):
    `BEGIN IMMEDIATE` for writes, a deferred `BEGIN` for reads."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # pysqlite issues no BEGIN of its own
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        try:  # takes an exclusive lock and does not wait; whoever holds it made the file WAL
            cursor.execute("PRAGMA journal_mode = WAL")
        except Exception:  # noqa: BLE001 - sqlite3.OperationalError: busy; the file is WAL
            pass
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get("sqlite_immediate", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def is_contention(exc: BaseException) -> bool:
    """True when the database refused a transaction only because another one held it up:
    SQLite busy/locked, PostgreSQL deadlock or serialization failure (retrying is safe)."""
    if not isinstance(exc, DBAPIError):
        return False
    code = getattr(exc.orig, "sqlstate", None)
    if code in {"40001", "40P01"}:  # serialization_failure, deadlock_detected
        return True
    text = str(exc.orig).lower()
    return isinstance(exc, OperationalError) and ("locked" in text or "busy" in text)


def write(engine: Engine, work: Callable[[Connection], T]) -> T:
    """Runs `work(conn)` in one committed transaction on `engine` and returns its result; a
    transaction refused for contention is retried (up to `RETRIES` times, jittered backoff).

    Raises:
        ResultsStoreError: still refused after every retry (the message names the database).
    """
    for attempt in range(RETRIES):
        try:
            with engine.connect() as conn:
                conn = conn.execution_options(sqlite_immediate=True)
                with conn.begin():
                    return work(conn)
        except DBAPIError as exc:
            if not is_contention(exc):
                raise
            if attempt == RETRIES - 1:
                raise ResultsStoreError(
                    f"{engine.url.render_as_string(hide_password=True)}: still busy after "
                    f"{RETRIES} attempts: {exc.orig}"
                ) from exc
            time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")

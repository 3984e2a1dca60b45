"""Which database, and one engine per database per process.

The URL has one owner, `resolve_url()`: an explicit URL (the CLI's `--db`, which
`select_url()` publishes to the process and its children as `EDGELOOP_DB`) > the
`EDGELOOP_DB` environment variable > `sqlite:///<EDGELOOP_HOME>/results.db`.

SQLite runs in WAL mode with a busy timeout; its write transactions start with
`BEGIN IMMEDIATE`, so two writers queue instead of failing half-way. PostgreSQL is reached
through psycopg 3 (`postgresql+psycopg://`; a plain `postgresql://` is read as that).
`write()` retries a transaction the database refused for contention, so concurrent writers
lose nothing.

A database this process has reached before and then loses (a PostgreSQL restarted for an
upgrade or a failover) is waited for: `write()` and `read()` retry with backoff for
`retry_s()` seconds (`EDGELOOP_DB_RETRY_S`, default `DEFAULT_RETRY_S`), saying so in one line
on stderr, and raise `DatabaseUnreachableError` past that. A write whose connection was lost
during COMMIT is not run twice: the retry asks PostgreSQL whether it committed. A database
never reached in this process (a wrong host or port) fails at once.
"""

from __future__ import annotations

import math
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional, TypeVar, Union

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError

from toolkit.errors import ConfigError, DatabaseUnreachableError, ResultsStoreError, SetupError
from toolkit.paths import edgeloop_home

ENV_VAR = "EDGELOOP_DB"
DB_FILE = "results.db"
BUSY_TIMEOUT_MS = 30_000
"""How long a SQLite writer waits for the lock before the database says busy."""
RETRIES = 8
"""Attempts of one write transaction refused for contention (busy, deadlock, serialization)."""
RETRY_ENV = "EDGELOOP_DB_RETRY_S"
DEFAULT_RETRY_S = 60.0
"""How long a read or write waits for a database that went away (restart, failover), seconds."""
CONNECT_TIMEOUT_S = 10
"""How long one PostgreSQL connection attempt may take (unless the URL sets connect_timeout)."""
BACKOFF_S = (0.25, 5.0)
"""First and longest wait between two attempts to reach a database that went away, seconds."""

EXPECTED = "expected e.g. sqlite:///path/results.db or postgresql+psycopg://user@host:5432/db"
T = TypeVar("T")


class DatabaseURLError(ResultsStoreError, SetupError):
    """`--db` / `EDGELOOP_DB` is not a database URL edgeloop can use (exit code 2)."""


_engines: dict[tuple[int, str], Engine] = {}
_lock = threading.Lock()
_reached: set[int] = set()  # id() of the engines that have connected once in this process
_down_since: dict[int, float] = {}  # id() of an engine -> monotonic time its outage began
_announced: set[int] = set()  # engines whose outage the stderr line has named already
_selected: Optional[str] = None  # the URL --db gave (select_url), for commands we print


def retry_s() -> float:
    """How long to wait for a database that went away: `$EDGELOOP_DB_RETRY_S` seconds
    (0: not at all), default `DEFAULT_RETRY_S` (60 s).

    Raises:
        ConfigError: the variable is not a number of seconds >= 0.
    """
    raw = os.environ.get(RETRY_ENV, "").strip()
    if not raw:
        return DEFAULT_RETRY_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"${RETRY_ENV}: expected seconds (a number >= 0), got {raw!r}")
    return value


def select_url(url: Optional[str]) -> None:
    """Makes `url` this process's database (and its children's, through `EDGELOOP_DB`)."""
    global _selected
    if url:
        _selected = os.environ[ENV_VAR] = normalize_url(url)


def selected_url() -> Optional[str]:
    """The URL `select_url()` (the CLI's `--db`) chose in this process, else None."""
    return _selected


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
    retry_s()  # a malformed $EDGELOOP_DB_RETRY_S fails now, not in the middle of an outage
    try:  # pre-ping: a pooled connection the server closed (a restart) is replaced on checkout
        timeout = (
            {} if "connect_timeout" in parsed.query else {"connect_timeout": CONNECT_TIMEOUT_S}
        )
        engine = create_engine(
            url, pool_pre_ping=True, pool_size=2, max_overflow=4, connect_args=timeout
        )
    except (ArgumentError, NoSuchModuleError) as exc:
        raise DatabaseURLError(
            f"results database URL {parsed.render_as_string(hide_password=True)!r}: {exc}; "
            f"{EXPECTED}"
        ) from None

    @event.listens_for(engine, "connect")
    def _on_connect(_dbapi_connection, _record) -> None:
        _reached.add(id(engine))

    return engine


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


CONNECTION_LOST = ("08", "57P01", "57P02", "57P03")
"""SQLSTATE (classes) of a server gone or going: connection exception, admin/crash shutdown,
cannot connect now (starting up, shutting down)."""


def is_unreachable(engine: Engine, exc: BaseException) -> bool:
    """True when `exc` says the (client-server) database went away or is restarting: the
    connection broke, was refused, or the server is shutting down or starting up. SQLite, a
    file, is never unreachable this way."""
    if not isinstance(exc, DBAPIError) or engine.dialect.name == "sqlite":
        return False
    if exc.connection_invalidated:
        return True
    code = getattr(exc.orig, "sqlstate", None)
    if code is None:  # psycopg: refused, reset, "server closed the connection unexpectedly"
        return isinstance(exc, OperationalError)
    return code.startswith(CONNECTION_LOST)


class _Outage:
    """One call's wait for a database that went away: the backoff, and the deadline, which
    every call on the engine shares (the outage began at its first failed call; the stderr line
    is written once per outage; a call after the bound passed fails at its first attempt)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.bound_s = retry_s()
        self.attempt = 0
        where = engine.url.render_as_string(hide_password=True)
        with _lock:
            self.began = _down_since.setdefault(id(engine), time.monotonic())
            self.announce = id(engine) not in _announced
            _announced.add(id(engine))
        self.where = where

    def wait(self, exc: Exception) -> None:
        """Sleeps before the next attempt, or raises DatabaseUnreachableError past the bound."""
        reason = _reason(exc)
        left = self.began + self.bound_s - time.monotonic()
        if left <= 0:
            raise DatabaseUnreachableError(
                f"results database {self.where} unreachable for {self.bound_s:g} s "
                f"(${RETRY_ENV}): {reason}"
            ) from None
        if self.announce:
            self.announce = False
            if sys.stderr.isatty():  # clear a progress line being rewritten in place
                sys.stderr.write("\r\033[K")
            sys.stderr.write(
                f"edgeloop: results database {self.where} is unreachable ({reason}); "
                f"retrying for up to {self.bound_s:g} s\n"
            )
            sys.stderr.flush()
        first, longest = BACKOFF_S
        pause = min(longest, first * 2**self.attempt) * (0.5 + random.random() / 2)
        self.attempt += 1
        time.sleep(min(pause, left))

    @staticmethod
    def ended(engine: Engine) -> None:
        """The database answered: the next failure is a new outage."""
        with _lock:
            _down_since.pop(id(engine), None)
            _announced.discard(id(engine))


def _reason(exc: Exception) -> str:
    """The driver's message on one line, without SQLAlchemy's background link."""
    return " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]


def _attempts(engine: Engine, attempt: Callable[[bool], T]) -> T:
    """Runs `attempt(after_lost_connection)` until it returns: contention is retried
    `RETRIES` times, a database that went away for `retry_s()` seconds (once it was reached
    in this process); any other error is raised at once. The database's error may be the one
    raised or its cause (a library that wraps SQLAlchemy's, as Optuna's storage does)."""
    outage: Optional[_Outage] = None
    busy = 0
    while True:
        try:
            result = attempt(outage is not None)
        except _StillOpen as exc:
            outage = outage or _Outage(engine)
            outage.wait(exc)
            continue
        except Exception as raised:  # noqa: BLE001 - only the database's errors are retried
            exc = _database_error(raised)
            if exc is None:
                raise
            if is_contention(exc):
                busy += 1
                if busy == RETRIES:
                    raise ResultsStoreError(
                        f"{engine.url.render_as_string(hide_password=True)}: still busy after "
                        f"{RETRIES} attempts: {exc.orig}"
                    ) from exc
                time.sleep(min(2.0, 0.05 * 2 ** (busy - 1)) * (0.5 + random.random()))
                continue
            if not (is_unreachable(engine, exc) and id(engine) in _reached):
                raise
            outage = outage or _Outage(engine)
            outage.wait(exc)
            continue
        if outage is not None or id(engine) in _down_since:
            _Outage.ended(engine)
        return result


def _database_error(exc: BaseException) -> Optional[DBAPIError]:
    """The DBAPIError that `exc` is or was raised from (a few links deep), else None."""
    for _ in range(4):
        if isinstance(exc, DBAPIError):
            return exc
        if exc.__cause__ is None and exc.__context__ is None:
            return None
        exc = exc.__cause__ or exc.__context__
    return None


def retried(engine: Engine, call: Callable[[], T]) -> T:
    """Runs `call()`, a call into the database through another client (Optuna's storage),
    retried like `read()` while `engine`'s database is away; `call` must be safe to repeat.

    Raises:
        DatabaseUnreachableError: the database stayed away past `retry_s()`.
    """
    return _attempts(engine, lambda _after_lost_connection: call())


TXID_CURRENT = text("SELECT txid_current()")
TXID_STATUS = text("SELECT txid_status(:xid)")


class _StillOpen(Exception):
    """The transaction of a lost connection is still open on the server: wait, then ask again."""


def write(engine: Engine, work: Callable[[Connection], T]) -> T:
    """Runs `work(conn)` in one committed transaction on `engine` and returns its result, once:
    a transaction refused for contention is retried (up to `RETRIES` times, jittered backoff),
    and one that lost its database for up to `retry_s()` seconds (see the module doc).

    A connection lost during COMMIT leaves the outcome unknown to the client. On PostgreSQL
    each attempt notes its transaction id, and a retry first asks the server for that
    transaction's fate (`txid_status`, made for this): committed, `work`'s result is returned
    without running it again; aborted, it runs again; still open, it waits.

    Raises:
        ResultsStoreError: still refused after every retry (the message names the database).
        DatabaseUnreachableError: the database stayed away past `retry_s()`.
    """
    tracked = engine.dialect.name == "postgresql"
    last: dict[str, Any] = {}  # the attempt that may have committed: its "xid" and "result"

    def attempt(after_lost_connection: bool) -> T:
        with engine.connect() as conn:
            if after_lost_connection and last:
                fate = conn.execute(TXID_STATUS, {"xid": last["xid"]}).scalar()
                conn.rollback()
                if fate == "committed":
                    return last["result"]
                if fate == "in progress":  # the server has not seen the old session end yet
                    raise _StillOpen(f"transaction {last['xid']} of a lost connection is open")
            last.clear()
            conn = conn.execution_options(sqlite_immediate=True)
            with conn.begin():
                xid = conn.execute(TXID_CURRENT).scalar() if tracked else None
                result = work(conn)
                if tracked:
                    last.update(xid=xid, result=result)
            return result

    return _attempts(engine, attempt)


def read(engine: Engine, work: Callable[[Connection], T]) -> T:
    """Runs `work(conn)` (queries only) on a connection of `engine` and returns its result;
    retried like `write()` while the database is away.

    Raises:
        DatabaseUnreachableError: the database stayed away past `retry_s()`.
    """

    def attempt(_after_lost_connection: bool) -> T:
        with engine.connect() as conn:
            return work(conn)

    return _attempts(engine, attempt)

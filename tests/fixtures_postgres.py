"""A real PostgreSQL server for tests (and the database benchmark), started and stopped here.

PostgreSQL refuses to run as root: `initdb` and `pg_ctl` run as the `postgres` user
(`runuser`), with the data folder, the socket folder (`-k`) and the log in a temporary folder
that user owns, on a free loopback port. Skips, with the reason, where this is not root or
Debian's postgresql is not installed.

    from tests.fixtures_postgres import postgres_server, postgres_url  # noqa: F401 (fixtures)
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

USER = "postgres"


@dataclass(frozen=True)
class PostgresServer:
    """A running server: where it listens; `url(db)` for a database on it."""

    port: int
    folder: Path

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Creates database `name` and returns its URL."""
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user={USER} dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def unavailable() -> str:
    """Why no server can be started here ("" when one can)."""
    if os.geteuid() != 0:
        return "PostgreSQL tests run initdb as the postgres user: they need root"
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        return "PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb; apt postgresql)"
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return f"no {USER!r} user (Debian's postgresql package creates it)"
    return ""


@contextlib.contextmanager
def running_postgres(durable: bool = False) -> Iterator[PostgresServer]:
    """Starts a server in a fresh folder and stops it (immediate) on exit.

    Args:
        durable: keep `fsync` on (the benchmark); tests turn it off for speed.
    """
    bindir = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[-1]).parent
    folder = Path(tempfile.mkdtemp(prefix="edgeloop-pg-"))  # /tmp: a folder postgres can reach
    owner = pwd.getpwnam(USER)
    os.chown(folder, owner.pw_uid, owner.pw_gid)
    data, log = folder / "data", folder / "server.log"

    def as_postgres(*args: str, timeout: float = 120) -> None:
        done = subprocess.run(
            ["runuser", "-u", USER, "--", *args], capture_output=True, text=True, timeout=timeout
        )
        if done.returncode:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr[-2000:]}{tail}")

    as_postgres(
        str(bindir / "initdb"),
        "-D",
        str(data),
        "-U",
        USER,
        "--auth=trust",
        "-E",
        "UTF8",
        "--no-sync",
    )
    port = _free_port()
    settings = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=200"
    if not durable:
        settings += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    as_postgres(
        str(bindir / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(log),
        "-o",
        settings,
        "-w",
        "-t",
        "60",
        "start",
    )
    try:
        yield PostgresServer(port, folder)
    finally:
        with contextlib.suppress(Exception):
            as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (skips with the reason where none can run)."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    with running_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A new, empty database on the session's server: its SQLAlchemy URL."""
    return postgres_server.create_database(f"edgeloop_{secrets.token_hex(4)}")


def wait_for_trials(engine, count: int, running: Callable[[], None],
                    timeout_s: float = 420) -> str:
    """The run id once the database behind `engine` holds `count` trials of one run.

    `running()` is called between looks and raises (AssertionError) when the process that
    writes them has ended, so a run that exits early fails at once instead of at the timeout.
    """
    from sqlalchemy import func, select

    from toolkit.db import schema
    from toolkit.db.upgrade import ensure_current

    ensure_current(engine)  # the tables exist whether or not the run has created them yet
    t = schema.trials
    query = select(t.c.run_id, func.count()).group_by(t.c.run_id)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        running()
        with engine.connect() as conn:
            for run_id, stored in conn.execute(query).all():
                if stored >= count:
                    return run_id
        time.sleep(0.05)
    raise AssertionError(f"no {count} trials stored within {timeout_s:g} s")

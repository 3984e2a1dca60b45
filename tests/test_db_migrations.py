"""Schema migrations on a real SQLite file and a real PostgreSQL 15: an empty database is
created at the current revision, one at the previous revision is upgraded with its rows, a
newer one is refused in one line naming both revisions, and two processes opening a new
database at once migrate it once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect, text

from tests.fixtures_postgres import postgres_server, postgres_url  # noqa: F401 - fixtures
from toolkit.db import schema
from toolkit.db.engine import get_engine
from toolkit.db.upgrade import alembic_config, current_revision, head_revision, upgrade
from toolkit.errors import ResultsStoreError
from toolkit.results.store import ResultsStore

REPO = Path(__file__).resolve().parent.parent
CURRENT = schema.revision_id(schema.SCHEMA_VERSION)
PREVIOUS = schema.revision_id(schema.SCHEMA_VERSION - 1)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """An empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'results.db'}"
    return request.getfixturevalue("postgres_url")


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "toolkit.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
    )


def test_the_shipped_head_is_the_schema_version_this_code_writes():
    assert head_revision() == CURRENT


def test_an_empty_database_is_created_at_the_current_revision_with_every_table(db_url):
    engine = get_engine(db_url)
    assert current_revision(engine) is None
    found = upgrade(engine)
    assert (found.before, found.after) == (None, CURRENT)
    tables = set(inspect(engine).get_table_names())
    assert set(schema.metadata.tables) <= tables
    for name, table in schema.metadata.tables.items():  # every column the code reads exists
        have = {c["name"] for c in inspect(engine).get_columns(name)}
        assert {c.name for c in table.columns} <= have, name
    assert upgrade(engine).before == CURRENT  # a second upgrade finds nothing to do


def test_a_database_at_the_previous_revision_is_upgraded_and_keeps_its_rows(db_url):
    engine = get_engine(db_url)
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, PREVIOUS)
        conn.execute(
            text(
                "INSERT INTO measurements (run_id, ok, device_id, p50_ms) "
                "VALUES ('old-run', 1, 'old-dev', 2.5)"
            )
        )
    assert current_revision(engine) == PREVIOUS

    def indexes() -> set[str]:
        return {i["name"] for i in inspect(engine).get_indexes("measurements")}

    def columns() -> set[str]:
        return {c["name"] for c in inspect(engine).get_columns("measurements")}

    assert "real_inputs" not in columns()  # what v5 adds

    store = ResultsStore(db_url)  # first use upgrades
    assert current_revision(engine) == CURRENT
    rows = store.query(run_id="old-run")
    assert len(rows) == 1 and rows.iloc[0]["p50_ms"] == 2.5 and rows.iloc[0]["tag"] is None
    assert {"catalog", "by_tag"} <= indexes()
    assert {"real_inputs", "inputs_sha256"} <= columns()
    assert {"trials", "artifacts", "gate_results"} <= set(inspect(engine).get_table_names())


def test_a_newer_database_is_refused_in_one_line_naming_both_revisions(db_url):
    engine = get_engine(db_url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'v99'"))
    with pytest.raises(ResultsStoreError) as caught:
        ResultsStore(db_url)
    message = str(caught.value)
    assert "v99" in message and CURRENT in message and "\n" not in message

    done = _cli("results", EDGELOOP_DB=db_url)  # the same line from every command, exit 1
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().startswith("error: ") and "v99" in done.stderr
    assert "Traceback" not in done.stderr
    done = _cli("db", "current", "--db", db_url)
    assert done.returncode == 0 and "v99" in done.stdout and CURRENT in done.stdout


def test_edgeloop_db_upgrade_and_current_report_the_revision(db_url):
    done = _cli("db", "current", "--db", db_url)
    assert done.returncode == 0 and "empty" in done.stdout, done.stderr
    done = _cli("db", "upgrade", "--db", db_url)
    assert done.returncode == 0 and f"empty -> {CURRENT}" in done.stdout, done.stderr
    done = _cli("--db", db_url, "db", "upgrade")  # the global option reaches it too
    assert done.returncode == 0 and f"at {CURRENT} already" in done.stdout, done.stderr


def test_two_processes_opening_a_new_database_at_once_migrate_it_once(db_url):
    script = (
        "import sys; from toolkit.results.store import ResultsStore; "
        "ResultsStore(sys.argv[1]); print('ok')"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, db_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        for _ in range(3)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.strip() == "ok", err[-2000:]
    assert current_revision(get_engine(db_url)) == CURRENT


def test_a_bad_url_is_a_setup_error_in_one_line_naming_what_was_expected():
    done = _cli("--db", "nonsense://", "results")
    assert done.returncode == 2, done.stderr
    assert "nonsense://" in done.stderr and "expected e.g." in done.stderr
    assert "Traceback" not in done.stderr


def test_a_results_db_written_by_the_sqlite3_era_store_is_adopted_with_its_rows(tmp_path):
    """The sqlite3 code's v2 file (PRAGMA user_version 2, no alembic_version) opens: revision
    v2 adopts its table, v3 adds to it, its rows read back, and old-code readers are told."""
    import contextlib
    import sqlite3

    from toolkit.db.migrations.versions.v2_results_store import FIXED, FLAT

    path = tmp_path / "results.db"
    kinds = {"I": "INTEGER", "R": "REAL", "T": "TEXT"}
    columns = ", ".join(f"{name} {kinds[kind]}" for name, kind in FIXED + FLAT)
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(f"CREATE TABLE measurements (id INTEGER PRIMARY KEY AUTOINCREMENT, {columns})")
        db.execute("CREATE INDEX by_model ON measurements (model_sha256, device_id)")
        db.execute("CREATE INDEX by_run ON measurements (run_id)")
        db.execute(
            "INSERT INTO measurements (run_id, ok, device_id, p90_ms) "
            "VALUES ('v2-run', 1, 'd', 3.5)"
        )
        db.execute("PRAGMA user_version = 2")
        db.commit()

    rows = ResultsStore(path).query(run_id="v2-run")
    assert len(rows) == 1 and rows.iloc[0]["p90_ms"] == 3.5
    assert current_revision(get_engine(str(path))) == CURRENT
    with contextlib.closing(sqlite3.connect(path)) as db:  # what the sqlite3-era code checks
        assert db.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION


def test_an_unreachable_database_is_one_line_naming_it():
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql+psycopg://nobody:secret@127.0.0.1:{port}/lab"
    done = _cli("--db", url, "results")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and f"127.0.0.1:{port}/lab" in done.stderr
    assert "secret" not in done.stderr  # the password is never printed

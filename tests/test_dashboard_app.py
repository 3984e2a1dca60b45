"""The dashboard app without a browser: read-only access, older stores, setup errors, exports.

Measurements come from a real local agent; the app is served in-process (FastAPI's
TestClient) over SQLite files written by the results store or in its pre-v3 layout.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.ab_models import edgeloop
from tests.fixtures_postgres import postgres_server, postgres_url  # noqa: F401 (fixtures)
from toolkit.measurement import COLUMNS, BenchmarkOptions

QUICK = BenchmarkOptions(warmup_runs=3, min_runs=20, min_seconds=0.2)
INJECTION = "' OR 1=1 --"
LOCAL = "http://127.0.0.1"  # a Host the dashboard serves (TestClient's own is refused)


@pytest.fixture(scope="module")
def measured(agent, tmp_path_factory):
    """Three real measurements of one small model on the module's agent."""
    from tests.model_files import build_tflite, tiny_cnn

    model = build_tflite(tiny_cnn(), tmp_path_factory.mktemp("m") / "tiny.tflite")
    return [agent.benchmark(model, QUICK, name="tiny.tflite") for _ in range(3)]


@pytest.fixture
def store_db(measured, tmp_path):
    """A results database written by today's store (schema v3)."""
    from toolkit.results.store import ResultsStore

    path = tmp_path / "results.db"
    store = ResultsStore(path)
    for m in measured:
        store.append(m, run_id="r1", extra={"source": "test"})
    return path


def _client(path: Path):
    from fastapi.testclient import TestClient

    from toolkit.dashboard.app import create_app

    return TestClient(create_app(f"sqlite:///{path}"), base_url=LOCAL)


def test_the_dashboard_engine_cannot_write(store_db):
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from toolkit.dashboard.readonly import readonly_engine

    engine = readonly_engine(f"sqlite:///{store_db}")
    with engine.connect() as db:
        assert db.execute(text("SELECT count(*) FROM measurements")).scalar_one() == 3
        with pytest.raises(OperationalError, match="readonly|read-only"):
            db.execute(text("DELETE FROM measurements"))
    with sqlite3.connect(store_db) as db:
        assert db.execute("SELECT count(*) FROM measurements").fetchone()[0] == 3


def test_sql_looking_filter_values_match_nothing_in_pages_and_exports(store_db, measured):
    client = _client(store_db)
    for name in ("device", "model", "runtime", "tag"):
        page = client.get("/measurements", params={name: INJECTION})
        assert page.status_code == 200 and '<span id="total">0</span>' in page.text
        csv = client.get("/measurements.csv", params={name: INJECTION})
        assert csv.text.strip().splitlines()[1:] == []
    everything = client.get("/measurements.csv").text.strip().splitlines()
    assert len(everything) == 1 + len(measured)
    header = everything[0].split(",")
    assert "p50_ms" in header and "record_json" not in header  # raw samples stay out


def test_a_store_from_before_schema_v3_reads_as_it_is(measured, tmp_path):
    """The sqlite3-era layout: measurements only, no tag column, no lineage/trials/gates."""
    path = tmp_path / "old.db"
    names = ["run_id", "options_json", "record_json", "extra_json", *(c.name for c in COLUMNS)]
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE measurements (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            + ", ".join(f"{c.name} {c.sql_type}" for c in COLUMNS)
            + ", run_id TEXT, options_json TEXT, record_json TEXT, extra_json TEXT)"
        )
        for m in measured:
            row = m.to_row()
            values = [
                "old",
                m.options.key(),
                json.dumps(m.to_json()),
                "{}",
                *(row[c.name] for c in COLUMNS),
            ]
            db.execute(
                f"INSERT INTO measurements ({', '.join(names)}) VALUES "
                f"({', '.join('?' * len(names))})",
                values,
            )
        db.execute("PRAGMA user_version = 2")
    client = _client(path)
    page = client.get("/measurements")
    assert f'<span id="total">{len(measured)}</span>' in page.text
    assert 'id="latency-distributions"' in page.text
    assert "records no lineage" in client.get("/lineage").text
    assert "records no tuning runs" in client.get("/tuning").text
    assert "records no validation gates" in client.get("/gates").text
    history = client.get("/history", params={"model": "tiny.tflite", "by": "tag"})
    assert history.status_code == 200 and "tiny.tflite" in history.text
    device = measured[0].device_id
    compare = client.get(
        "/compare", params={"device": device, "a": "tiny.tflite", "b": "tiny.tflite"}
    )
    assert "no detectable difference" in compare.text  # a model against itself


def test_plotly_js_is_served_from_the_installed_package(store_db):
    import plotly

    shipped = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    served = _client(store_db).get("/static/plotly.min.js")
    assert served.status_code == 200 and served.content == shipped.read_bytes()
    page = _client(store_db).get("/devices").text
    assert '<script src="/static/plotly.min.js">' in page and "cdn" not in page.lower()


def test_a_missing_or_empty_database_is_a_setup_error_naming_it(tmp_path):
    missing = tmp_path / "nowhere" / "results.db"
    done = edgeloop(
        "dashboard", "--db", str(missing), home=tmp_path / "home", check=False, timeout=60
    )
    assert done.returncode == 2 and str(missing) in done.stderr
    empty = tmp_path / "empty.db"
    with sqlite3.connect(empty) as db:
        db.execute("CREATE TABLE unrelated (a INTEGER)")
    done = edgeloop(
        "dashboard", "--db", str(empty), home=tmp_path / "home", check=False, timeout=60
    )
    assert done.returncode == 2 and "no measurements table" in done.stderr


def test_a_token_file_other_users_can_read_is_refused(store_db, tmp_path):
    token = tmp_path / "token"
    token.write_text("lab-token\n")
    token.chmod(0o644)
    done = edgeloop(
        "dashboard",
        "--db",
        str(store_db),
        "--token-file",
        str(token),
        home=tmp_path / "home",
        check=False,
        timeout=60,
    )
    assert done.returncode == 2 and str(token) in done.stderr


def test_pages_read_a_shared_postgresql_database_and_cannot_write_it(measured, postgres_url):  # noqa: F811
    from fastapi.testclient import TestClient
    from sqlalchemy import text
    from sqlalchemy.exc import InternalError, OperationalError, ProgrammingError

    from toolkit.dashboard.app import create_app
    from toolkit.dashboard.readonly import readonly_engine
    from toolkit.results.store import ResultsStore

    for tag, m in zip(("v1", "v1", "v2"), measured):
        ResultsStore(postgres_url, tag=tag).append(m, run_id="pg")
    client = TestClient(create_app(postgres_url), base_url=LOCAL)
    device, sha = measured[0].device_id, measured[0].model_sha256
    page = client.get("/measurements", params={"device": device})
    assert f'<span id="total">{len(measured)}</span>' in page.text
    assert "password" not in page.text
    for path, params in (
        ("/devices", {}),
        ("/history", {"model": sha, "by": "day"}),
        ("/history", {"model": sha, "by": "tag"}),
        ("/gates", {}),
        ("/lineage", {"sha": sha}),
        ("/tuning", {}),
    ):
        assert client.get(path, params=params).status_code == 200, path
    assert "v1" in client.get("/history", params={"model": sha, "by": "tag"}).text
    csv = client.get("/measurements.csv", params={"tag": "v1"}).text.strip().splitlines()
    assert len(csv) == 1 + 2
    engine = readonly_engine(postgres_url)
    with (
        engine.connect() as db,
        pytest.raises((InternalError, OperationalError, ProgrammingError), match="read-only"),
    ):
        db.execute(text("DELETE FROM measurements"))
    with engine.connect() as db:
        assert db.execute(text("SELECT count(*) FROM measurements")).scalar_one() == 3


def test_lists_of_what_exists_are_reused_then_read_again_in_the_background(store_db, measured):
    import re
    import time

    from fastapi.testclient import TestClient

    from toolkit.dashboard.app import create_app
    from toolkit.results.store import ResultsStore

    def counted(client) -> int:
        page = client.get("/devices").text
        return int(re.search(r'id="seen-devices".*?<td class="num">(\d+)</td>', page, re.S)[1])

    client = TestClient(create_app(f"sqlite:///{store_db}", lists_ttl_s=1.0), base_url=LOCAL)
    assert counted(client) == len(measured)
    ResultsStore(store_db).append(measured[0], run_id="later")
    assert counted(client) == len(measured)  # reused within the TTL
    time.sleep(1.1)
    deadline = time.monotonic() + 30
    while counted(client) != len(measured) + 1:  # the first call past the TTL starts a read
        assert time.monotonic() < deadline, "the list was never read again"
        time.sleep(0.1)
    fresh = TestClient(create_app(f"sqlite:///{store_db}", lists_ttl_s=0), base_url=LOCAL)
    assert counted(fresh) == len(measured) + 1

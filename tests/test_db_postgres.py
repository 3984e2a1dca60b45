"""The lab's shared database, for real: a PostgreSQL 15 started by the test session, and the
commands pointed at it through `EDGELOOP_DB` as a user would, each in its own process.

compress, profile and validate write to it (lineage, tagged rows, gate results); two
processes with different EDGELOOP_HOMEs write concurrently and lose nothing (on PostgreSQL
and on a shared SQLite file); a tune run killed with `kill -9` on one "host" is resumed from
another with its own EDGELOOP_HOME.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
import yaml
from sqlalchemy import select

from tests.fixtures_postgres import (  # noqa: F401 - fixtures
    postgres_server,
    postgres_url,
    wait_for_trials,
)
from toolkit.db import schema
from toolkit.db.engine import get_engine
from toolkit.results.store import ResultsStore

REPO = Path(__file__).resolve().parent.parent
ROWS_PER_WRITER = 200
QUICK = ("--runs", "20", "--min-seconds", "0.2")


def _cli(*args: str, home: Path, db: str, timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "toolkit.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(home, db),
    )
    assert done.returncode == 0, f"edgeloop {' '.join(args)}: {done.stderr[-3000:]}"
    return done


def _env(home: Path, db: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "EDGELOOP_HOME": str(home),
        "EDGELOOP_DB": db,
        "EDGELOOP_AGENT_IDLE_S": "20",
    }


@pytest.fixture(scope="module")
def lab(postgres_server, tmp_path_factory):  # noqa: F811 - the fixture imported above
    """One database for the module, a compressed digits model recorded in it."""
    url = postgres_server.create_database("edgeloop_lab")
    home = tmp_path_factory.mktemp("host-a")
    out = tmp_path_factory.mktemp("compressed")
    recipe = out / "recipe.yaml"
    recipe.write_text("prune: {amount: 0.25}\n")
    _cli(
        "compress",
        "digits-mlp",
        "--recipe",
        str(recipe),
        "--out",
        str(out / "m"),
        home=home,
        db=url,
    )
    card = json.loads((out / "m" / "card.json").read_text())
    return {"url": url, "home": home, "artifact": out / "m" / "model.tflite", "card": card}


def test_compress_and_profile_write_to_postgres_and_lineage_shows_them(lab):
    sha = lab["card"]["artifacts"]["tflite"]["sha256"]
    _cli(
        "profile",
        str(lab["artifact"]),
        *QUICK,
        "--tag",
        "git-abc123",
        home=lab["home"],
        db=lab["url"],
    )
    rows = ResultsStore(lab["url"]).query(tag="git-abc123")
    assert len(rows) == 1 and rows.iloc[0]["model_sha256"] == sha and rows.iloc[0]["ok"]
    assert rows.iloc[0]["p50_ms"] > 0

    shown = _cli("results", "--lineage", sha[:12], home=lab["home"], db=lab["url"]).stdout
    assert f"artifact {sha}" in shown and '{"prune": {"amount": 0.25}}' in shown
    assert f"base model state {lab['card']['parent_sha256'][:16]}" in shown
    assert "measurements: 1" in shown and "tag git-abc123" in shown
    assert f"p50_ms {rows.iloc[0]['p50_ms']:.3f}" in shown


def test_validate_records_every_check_of_every_device_in_postgres(lab, tmp_path):
    junit, html = tmp_path / "gate.xml", tmp_path / "gate.html"
    _cli(
        "validate",
        str(lab["artifact"]),
        "--device",
        "local",
        *QUICK,
        "--junit",
        str(junit),
        "--html",
        str(html),
        "--tag",
        "release-7",
        home=lab["home"],
        db=lab["url"],
    )
    engine = get_engine(lab["url"])
    v, g = schema.validation_runs, schema.gate_results
    with engine.connect() as conn:
        run = conn.execute(select(v).where(v.c.tag == "release-7")).one()
        checks = conn.execute(select(g).where(g.c.run_id == run.run_id)).all()
    assert run.passed and run.devices == 1 and run.failed_devices == 0
    assert run.artifact_sha256 == lab["card"]["artifacts"]["tflite"]["sha256"]
    assert {c.check for c in checks} >= {"connect", "push", "benchmark"}
    assert all(c.passed and c.device == "local" for c in checks)
    assert all(
        c.junit_path == str(junit.resolve()) and c.html_path == str(html.resolve()) for c in checks
    )
    assert all("message" in json.loads(c.detail) for c in checks)
    measured = ResultsStore(lab["url"]).query(run_id=run.run_id)
    assert len(measured) == 1 and measured.iloc[0]["tag"] == "release-7"


WRITER = """
import json, sys
from toolkit.measurement import Measurement
from toolkit.results.store import ResultsStore
record = Measurement.from_json(json.loads(open(sys.argv[1]).read()))
store = ResultsStore()  # EDGELOOP_DB
for i in range(int(sys.argv[3])):
    store.append(record, run_id=sys.argv[2], extra={"i": i})
print("done")
"""


@pytest.fixture(params=["postgresql", "sqlite"])
def shared_db(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared' / 'results.db'}"
    return request.getfixturevalue("postgres_url")


def test_two_writers_with_their_own_homes_lose_nothing(lab, shared_db, tmp_path):
    record = ResultsStore(lab["url"]).query().iloc[-1]
    source = ResultsStore(lab["url"]).record(int(record["id"]))
    record_file = tmp_path / "record.json"
    record_file.write_text(json.dumps(source.to_json()))
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(record_file), f"writer-{n}", str(ROWS_PER_WRITER)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(tmp_path / f"home-{n}", shared_db),
        )
        for n in range(2)
    ]
    for proc in writers:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and out.strip() == "done", err[-3000:]
    rows = ResultsStore(shared_db).query()
    assert len(rows) == 2 * ROWS_PER_WRITER and rows["id"].is_unique
    for n in range(2):
        mine = rows[rows["run_id"] == f"writer-{n}"]
        extras = sorted(json.loads(e)["i"] for e in mine["extra_json"])
        assert extras == list(range(ROWS_PER_WRITER))  # every row, once, in its own process


def test_a_tune_killed_with_kill_9_on_one_host_is_resumed_from_another(postgres_url, tmp_path):  # noqa: F811
    space = tmp_path / "space.yaml"
    space.write_text(
        yaml.safe_dump(
            {"dimensions": {"prune_amount": [0.0, 0.25, 0.5, 0.75]}, "finetune_epochs": 0}
        )
    )
    home_a, home_b = tmp_path / "host-a", tmp_path / "host-b"
    args = [
        "tune",
        "digits-mlp",
        "--strategy",
        "grid",
        "--space",
        str(space),
        "--min-seconds",
        "0.2",
        "--tag",
        "nightly",
    ]
    host_a = subprocess.Popen(
        [sys.executable, "-m", "toolkit.cli.main", *args, "--out", str(tmp_path / "runs-a")],
        env=_env(home_a, postgres_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    engine = get_engine(postgres_url)
    helpers: list[psutil.Process] = []
    try:
        run_id = _wait_for_trials(host_a, engine, count=2)
        helpers = psutil.Process(host_a.pid).children(recursive=True)
        assert host_a.poll() is None, "the run ended before it could be killed"
        os.kill(host_a.pid, signal.SIGKILL)
        host_a.wait(timeout=30)
    finally:
        _kill(host_a, helpers)
    before = _trials(engine, run_id)
    measured_before = len(ResultsStore(postgres_url).query(run_id=run_id))
    assert len(before) >= 2

    # Host B: another EDGELOOP_HOME and --out; it knows the run only through the database.
    resumed = _cli(
        "tune", "--resume", run_id, "--out", str(tmp_path / "runs-b"), home=home_b, db=postgres_url
    )
    result = json.loads((tmp_path / "runs-b" / run_id / "result.json").read_text())
    after = _trials(engine, run_id)
    assert result["trials"] == 3 and len(after) == 4, resumed.stderr[-2000:]
    assert all(after[n] == trial for n, trial in before.items())  # stored trials untouched
    rows = ResultsStore(postgres_url).query(run_id=run_id)
    keys = rows.groupby(["model_sha256", "device_id", "options_json"]).size()
    assert (keys == 1).all(), "an artifact was measured twice on the same device"
    assert len(rows) == result["measurements"] == 4 and len(rows) >= measured_before
    assert set(rows["tag"]) == {"nightly"}  # host B resumed under the run's tag
    a = schema.artifacts
    with engine.connect() as conn:  # lineage: every build of the run, claimed by it
        built = set(conn.execute(select(a.c.sha256).where(a.c.run_id == run_id)).scalars())
    assert set(rows["model_sha256"]) <= built
    t = schema.tune_runs
    with engine.connect() as conn:
        run = conn.execute(select(t).where(t.c.run_id == run_id)).one()
    assert run.tag == "nightly" and json.loads(run.config_json)["strategy"] == "grid"


def _trials(engine, run_id: str) -> dict[int, dict]:
    t = schema.trials
    with engine.connect() as conn:
        rows = conn.execute(select(t.c.number, t.c.json).where(t.c.run_id == run_id)).all()
    return {number: json.loads(text) for number, text in rows}


def _wait_for_trials(proc: subprocess.Popen, engine, count: int) -> str:
    """The run id once the database holds `count` trials of one run (fails at once if the
    run exits first)."""

    def running() -> None:
        if proc.poll() is not None:
            raise AssertionError(
                f"tune exited early ({proc.returncode}): {proc.stderr.read()[-2000:]}"
            )

    return wait_for_trials(engine, count, running)


def _kill(host: subprocess.Popen, helpers: list[psutil.Process]) -> None:
    if host.poll() is None:
        host.kill()
        host.wait()
    for proc in helpers:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(helpers, timeout=10)


class CommitCutter:
    """A TCP proxy in front of the server that, once armed, passes the next COMMIT on to the
    server and then drops the connection instead of the server's answer: the transaction is
    committed and the client cannot know it (the fault a restart or failover can cause)."""

    def __init__(self, port: int) -> None:
        self.server_port = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed = threading.Event()
        self.cut = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.server_port))
            dropping = threading.Event()
            threading.Thread(
                target=self._up, args=(client, upstream, dropping), daemon=True
            ).start()
            threading.Thread(
                target=self._down, args=(upstream, client, dropping), daemon=True
            ).start()

    def _up(
        self, client: socket.socket, upstream: socket.socket, dropping: threading.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if self.armed.is_set() and b"COMMIT" in data:
                    self.armed.clear()
                    dropping.set()  # before the server can answer
                upstream.sendall(data)

    def _down(
        self, upstream: socket.socket, client: socket.socket, dropping: threading.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                if dropping.is_set():  # the COMMIT's answer: the client never gets it
                    self.cut.set()
                    for end in (client, upstream):
                        end.shutdown(socket.SHUT_RDWR)
                        end.close()
                    return
                client.sendall(data)

    def close(self) -> None:
        self.listener.close()


def test_a_write_whose_commit_answer_is_lost_is_stored_once(lab, postgres_server, capfd):  # noqa: F811
    _cli(
        "profile",
        str(lab["artifact"]),
        "--device",
        "local",
        *QUICK,
        "--tag",
        "to-copy",
        home=lab["home"],
        db=lab["url"],
    )
    record = ResultsStore(lab["url"]).query(tag="to-copy").iloc[-1]
    measurement = ResultsStore(lab["url"]).record(int(record["id"]))
    cutter = CommitCutter(postgres_server.port)
    try:
        url = lab["url"].replace(f":{postgres_server.port}/", f":{cutter.port}/")
        store = ResultsStore(url)  # reached once: a lost connection is now waited for
        cutter.armed.set()
        row_id = store.append(measurement, run_id="lost-commit")
        assert cutter.cut.is_set(), "the proxy never cut a COMMIT's answer"
    finally:
        cutter.close()
    rows = ResultsStore(lab["url"]).query(run_id="lost-commit")
    assert list(rows["id"]) == [row_id]  # committed once, and its id returned
    assert capfd.readouterr().err.count("is unreachable") == 1

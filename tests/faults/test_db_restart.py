"""A lab's shared PostgreSQL restarts (an upgrade, a failover) under a running `edgeloop tune`.

Each test starts its own real PostgreSQL 15 (the session's server is shared with other tests
and is never stopped), runs `edgeloop tune` against it in a subprocess as a user would, and
stops the server once the run has stored trials: it is started again once the tune says on
stderr that it is waiting for it (the run then finishes, every trial stored once; with the
pareto strategy its Optuna study lives in the same database and waits as well), or left
down past a short `EDGELOOP_DB_RETRY_S` (the run ends in one line naming the database and the
`--resume` command, which then finishes the run).
"""

from __future__ import annotations

import glob
import json
import os
import queue
import re
import secrets
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from tests.fixtures_postgres import (
    USER,
    PostgresServer,
    running_postgres,
    unavailable,
    wait_for_trials,
)
from toolkit.db import schema
from toolkit.db.engine import RETRY_ENV, get_engine, retry_s
from toolkit.errors import ConfigError
from toolkit.results.store import ResultsStore

REPO = Path(__file__).resolve().parents[2]
GRID = [0.0, 0.25, 0.5, 0.75]  # four candidates after the base: five trials
PASSWORD = "s3cret-not-for-logs"  # trust authentication ignores it; it must never be printed


class Server:
    """A PostgreSQL started for one test, with `stop()` and `start()` as its admin would."""

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.data = server.folder / "data"
        self.pg_ctl = str(Path(sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))[-1]))
        opts = shlex.split((self.data / "postmaster.opts").read_text())
        self.options = shlex.join(opts[1:])  # the port, socket folder, settings it started with

    def _pg_ctl(self, *args: str) -> None:
        log = str(self.server.folder / "server.log")
        command = ["runuser", "-u", USER, "--", self.pg_ctl, "-D", str(self.data), "-l", log]
        subprocess.run([*command, *args], check=True, capture_output=True, timeout=120)

    def stop(self) -> None:
        """`pg_ctl stop -m fast`: sessions are ended, as a restart for an upgrade does."""
        self._pg_ctl("-m", "fast", "-w", "stop")

    def start(self) -> None:
        self._pg_ctl("-o", self.options, "-w", "-t", "60", "start")


@pytest.fixture
def server() -> Iterator[Server]:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    with running_postgres() as started:
        yield Server(started)


class Tune:
    """`edgeloop tune` over four prune amounts (grid: all of them; pareto: three trials, its
    Optuna study in the same database) in a subprocess; its stderr read line by line."""

    def __init__(self, url: str, tmp: Path, retry_s: str, strategy: str = "grid") -> None:
        space = tmp / "space.yaml"
        space.write_text(yaml.safe_dump({"dimensions": {"prune_amount": GRID},
                                         "finetune_epochs": 0}))
        self.out = tmp / "runs"
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "EDGELOOP_HOME": str(tmp / "home"),
                    "EDGELOOP_DB": url, RETRY_ENV: retry_s, "EDGELOOP_AGENT_IDLE_S": "20"}
        args = ["tune", "digits-mlp", "--strategy", strategy, "--space", str(space),
                "--min-seconds", "0.2", "--out", str(self.out)]
        if strategy == "pareto":
            args += ["--trials", str(len(GRID) - 1)]
        self.proc = subprocess.Popen([sys.executable, "-m", "toolkit.cli.main", *args],
                                     env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            self._new.put(line)
        self._new.put("")  # end of stream

    def wait_for_line(self, pattern: str, timeout_s: float = 300) -> str:
        """The first stderr line from now on that matches `pattern` (fails at once if the
        tune ends first)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self._new.get(timeout=1)
            except queue.Empty:
                continue
            if not line:
                break
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r}; stderr:\n" + self.stderr()[-3000:])

    def wait_for_trials(self, engine, count: int) -> str:
        """The run id once the database holds `count` of its trials (fails at once if the
        tune ends first)."""

        def running() -> None:
            assert self.proc.poll() is None, f"tune ended early:\n{self.stderr()[-3000:]}"

        return wait_for_trials(engine, count, running)

    def finish(self, timeout_s: float = 600) -> int:
        code = self.proc.wait(timeout=timeout_s)
        self._reader.join(timeout=30)
        return code

    def stderr(self) -> str:
        return "\n".join(self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _database(server: Server) -> str:
    """A new database on `server`; its URL carries a password (trust ignores it)."""
    url = server.server.create_database(f"edgeloop_{secrets.token_hex(4)}")
    return url.replace(f"{USER}@", f"{USER}:{PASSWORD}@")


def _check_stored_once(url: str, run_id: str, out: Path) -> None:
    """Every trial of the run stored once, every measurement once, as result.json counts."""
    engine = get_engine(url)
    t = schema.trials
    with engine.connect() as conn:
        numbers = list(conn.execute(select(t.c.number).where(t.c.run_id == run_id)).scalars())
    result = json.loads((out / run_id / "result.json").read_text())
    assert sorted(numbers) == list(range(result["trials"] + 1))  # the base and each trial, once
    assert result["trials"] == len(GRID) - 1  # grid: prune 0.0 is the base; pareto: --trials
    rows = ResultsStore(url).query(run_id=run_id)
    keys = rows.groupby(["model_sha256", "device_id", "options_json"]).size()
    assert (keys == 1).all(), "a measurement was stored twice"
    assert len(rows) == result["measurements"] == len(numbers)


@pytest.mark.parametrize("strategy", ["grid", "pareto"])
def test_a_tune_survives_a_database_restart_and_stores_every_trial_once(
    server, tmp_path, strategy
):
    url = _database(server)
    tune = Tune(url, tmp_path, "300", strategy)  # generous: the test waits on events, not time
    try:
        run_id = tune.wait_for_trials(get_engine(url), count=2)
        server.stop()
        waiting = tune.wait_for_line(r"is unreachable")
        server.start()
        code = tune.finish()
    finally:
        tune.kill()
    assert code == 0, tune.stderr()[-3000:]
    assert "retrying for up to 300 s" in waiting and PASSWORD not in tune.stderr()
    assert sum("unreachable" in line for line in tune.lines) == 1  # one line for the outage
    assert "Traceback" not in tune.stderr()
    _check_stored_once(url, run_id, tune.out)


def test_a_database_gone_past_the_retry_bound_ends_the_tune_in_one_line_with_resume(
    server, tmp_path
):
    url = _database(server)
    tune = Tune(url, tmp_path, retry_s="2")
    try:
        run_id = tune.wait_for_trials(get_engine(url), count=2)
        server.stop()
        code = tune.finish()
    finally:
        tune.kill()
    text = tune.stderr()
    assert code == 1 and "Traceback" not in text, text[-3000:]
    assert PASSWORD not in text
    errors = [line for line in tune.lines if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == tune.lines[-1], text[-3000:]
    where = f"postgresql+psycopg://{USER}:***@127.0.0.1:{server.server.port}/"
    assert where in errors[0] and "unreachable for 2 s" in errors[0]
    command = re.search(r"`(edgeloop [^`]*tune --resume [^`]*)`", errors[0])
    assert command and f"--resume {run_id}" in command.group(1), errors[0]
    assert sum("retrying for up to 2 s" in line for line in tune.lines) == 1, text[-3000:]

    server.start()  # the database is back: the command the line gave finishes the run
    words = shlex.split(command.group(1))
    resumed = subprocess.run([sys.executable, "-m", "toolkit.cli.main", *words[1:]],
                             env=tune.env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _check_stored_once(url, run_id, tune.out)


@pytest.mark.parametrize("value", ["soon", "-1", "nan"])
def test_a_retry_bound_that_is_not_seconds_is_refused_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv(RETRY_ENV, value)
    with pytest.raises(ConfigError, match=rf"\${RETRY_ENV}: expected seconds .* got '{value}'"):
        retry_s()


def test_the_retry_bound_is_sixty_seconds_unless_set(monkeypatch):
    monkeypatch.delenv(RETRY_ENV, raising=False)
    assert retry_s() == 60.0
    monkeypatch.setenv(RETRY_ENV, "0")  # 0: fail at the first lost connection
    assert retry_s() == 0.0

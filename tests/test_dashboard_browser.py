"""The dashboard in a real browser over a results database filled by real runs.

Two real agents (device ids lab-pi-01 and lab-nuc-02) are measured by `edgeloop profile`,
gated by `edgeloop validate` (lab-nuc's budget is one no model meets) and tuned on by
`edgeloop tune` (running in the background while the tuning page is watched). The dashboard
is its own process (`edgeloop dashboard --port 0`), and Debian's chromium reads it. Every
figure checked is read from the same database, never written in.

Set EDGELOOP_SCREENSHOTS=docs/screenshots to keep a screenshot of each main page.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

from tests.ab_models import IDLE_S, build_pair, edgeloop
from tests.fixtures_browser import (  # noqa: F401 (chromium: a fixture)
    chromium,
    dashboard_server,
    screenshot,
    wait_until,
)

pytestmark = pytest.mark.slow
QUICK = ["--runs", "20", "--warmup", "3", "--min-seconds", "0.2"]
RED = "rgb(192, 21, 26)"  # .fail in dashboard.css
INJECTION = "' OR 1=1 --"


@dataclass
class Lab:
    root: Path
    home: Path
    db: Path
    profiles: Path
    tiny_sha: str
    wide_sha: str
    tune: subprocess.Popen
    tune_output: tuple[str, str] = ("", "")

    @property
    def url(self) -> str:
        return f"sqlite:///{self.db}"

    def rows(self, sql: str, *params) -> list[tuple]:
        with sqlite3.connect(self.db) as db:
            return db.execute(sql, params).fetchall()

    def wait_tune(self) -> None:
        """Waits for the background `edgeloop tune` to end; it must have succeeded."""
        if self.tune.returncode is None:
            self.tune_output = self.tune.communicate(timeout=600)
        assert self.tune.returncode == 0, self.tune_output[1][-2000:]


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from toolkit.transport.local import AgentProcess

    root = tmp_path_factory.mktemp("lab")
    home = root / "home"
    tiny, wide = build_pair(root / "models")
    agents = [
        AgentProcess(root / "cache-pi", ("--device-id", "lab-pi-01")),
        AgentProcess(root / "cache-nuc", ("--device-id", "lab-nuc-02")),
    ]
    pi, nuc = (a.address for a in agents)
    tune = None
    try:
        # One model file whose build got slower between two tags: tiny bytes at v1, wide at v2.
        kws = root / "kws.tflite"
        shutil.copy(tiny, kws)
        edgeloop(
            "profile", str(kws), "--device", pi, "--repeat", "3", "--tag", "v1", *QUICK, home=home
        )
        shutil.copy(wide, kws)
        edgeloop(
            "profile", str(kws), "--device", pi, "--repeat", "3", "--tag", "v2", *QUICK, home=home
        )
        edgeloop("profile", str(tiny), "--device", nuc, "--tag", "v2", *QUICK, home=home)
        fleets = root / "profiles" / "fleets"
        fleets.mkdir(parents=True)
        dead_port = _free_port()
        (fleets / "bench.yaml").write_text(
            yaml.safe_dump(
                {
                    "name": "bench",
                    "devices": [
                        {"name": "lab-pi", "address": pi, "budgets": {"latency_p90_ms": 1000}},
                        {"name": "lab-nuc", "address": nuc, "budgets": {"latency_p90_ms": 1e-6}},
                    ],
                }
            )
        )
        (fleets / "spares.yaml").write_text(
            yaml.safe_dump(
                {
                    "name": "spares",
                    "devices": [{"name": "lab-dead", "address": f"127.0.0.1:{dead_port}"}],
                }
            )
        )
        gate = edgeloop(
            "validate",
            str(tiny),
            "--fleet",
            str(fleets / "bench.yaml"),
            "--runs",
            "20",
            "--min-seconds",
            "0.2",
            "--junit",
            str(root / "junit.xml"),
            "--html",
            str(root / "gate.html"),
            "--tag",
            "v2",
            home=home,
            check=False,
        )
        assert gate.returncode == 1, gate.stderr  # lab-nuc fails its budget
        space = root / "space.yaml"
        space.write_text(yaml.safe_dump({"dimensions": {"prune_amount": [0.0, 0.25, 0.5]}}))
        env = {k: v for k, v in os.environ.items() if k != "EDGELOOP_LOCAL_AGENT"}
        env.update({"EDGELOOP_HOME": str(home), "EDGELOOP_AGENT_IDLE_S": IDLE_S})
        tune = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "toolkit.cli.main",
                "tune",
                "digits-mlp",
                "--device",
                pi,
                "--strategy",
                "grid",
                "--space",
                str(space),
                "--budget-ratio",
                "latency_p90=0.9",
                "--min-seconds",
                "0.2",
                "--tag",
                "v3",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        yield Lab(root, home, home / "results.db", root / "profiles", _sha(tiny), _sha(wide), tune)
    finally:
        if tune is not None and tune.poll() is None:
            tune.kill()
            tune.communicate()
        for agent in agents:
            agent.stop()
        edgeloop("agent", "stop", home=home, check=False)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(lab):
    # The database changes under the pages (tune runs in the background): every request
    # reads the lists of devices and models again (--lists-ttl 0) so counts are exact.
    # validate wrote its reports into the lab's folder, the one gate reports are served from.
    with dashboard_server(
        lab.url,
        env={"EDGELOOP_PROFILES": str(lab.profiles)},
        args=("--lists-ttl", "0", "--reports-dir", str(lab.root)),
    ) as srv:
        yield srv


@pytest.fixture
def page(chromium):  # noqa: F811 - the fixture imported above
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    yield context.new_page()
    context.close()


def test_tuning_page_shows_new_trials_while_the_run_is_in_progress(lab, server, page):
    deadline = time.monotonic() + 300
    while not lab.rows("SELECT name FROM sqlite_master WHERE name = 'tune_runs'") or not (
        lab.rows("SELECT run_id FROM tune_runs")
    ):
        assert lab.tune.poll() is None, lab.tune.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the tuning run never appeared in the database"
        time.sleep(0.5)
    run_id = lab.rows("SELECT run_id FROM tune_runs")[0][0]
    page.goto(server.url + "tuning")
    page.click(f"#tune-runs a[href='/tuning/{quote(run_id, safe='')}']")
    first = int(page.text_content("#trial-count"))
    # The page fetches /api/tuning/RUN every few seconds: more trials appear without a reload.
    wait_until(page, f"Number(document.body.dataset.refreshed || 0) > {first}", 300)
    lab.wait_tune()
    stored = lab.rows("SELECT count(*) FROM trials WHERE run_id = ?", run_id)[0][0]
    wait_until(page, f"Number(document.body.dataset.refreshed) === {stored}", 30)
    assert page.locator("#trials tr").count() == stored + 1  # and the header
    assert page.locator("#pareto.js-plotly-plot").count() == 1
    assert page.locator("#trajectory.js-plotly-plot").count() == 1
    assert "budget" in page.text_content("#pareto")  # the budget line's legend entry
    usage = [
        json.loads(t)["usage"].get("latency_p90_ms")
        for (t,) in lab.rows("SELECT json FROM trials WHERE run_id = ? ORDER BY number", run_id)
    ]
    worst = [
        json.loads(t)["worst"]["latency_p90_ms"]
        for (t,) in lab.rows("SELECT json FROM trials WHERE run_id = ? ORDER BY number", run_id)
    ]
    assert float(page.text_content("#budget")) == pytest.approx(worst[0] / usage[0], rel=1e-3)
    screenshot(page, "tuning")


def test_devices_page_asks_every_fleet_agent_and_lists_measured_devices(lab, server, page):
    page.goto(server.url + "devices")
    wait_until(page, "document.body.dataset.live === 'done'", 30)
    pi = page.locator("tr[data-device='lab-pi']")
    assert pi.locator(".live-status").text_content() == "up"
    assert pi.locator(".live-id").text_content() == "lab-pi-01"
    assert "tflite" in pi.locator(".live-runtimes").text_content()
    assert pi.locator(".live-queue").text_content() == "0"
    assert pi.locator(".live-last").text_content()  # the database's latest row of lab-pi-01
    dead = page.locator("tr[data-device='lab-dead'] .live-status")
    assert dead.text_content().startswith("down")
    assert dead.evaluate("e => getComputedStyle(e).color") == RED
    seen = page.text_content("#seen-devices")
    for device_id, count in lab.rows(
        "SELECT device_id, count(*) FROM measurements GROUP BY device_id"
    ):
        row = page.locator("#seen-devices tr", has_text=device_id)
        assert device_id in seen and row.locator("td.num").first.text_content() == str(count)
    screenshot(page, "devices")


def test_measurements_filter_then_compare_two_builds_on_one_device(lab, server, page):
    page.goto(server.url + "measurements")
    total = lab.rows("SELECT count(*) FROM measurements")[0][0]
    assert page.text_content("#total") == str(total)
    assert page.locator("#latency-distributions.js-plotly-plot").count() == 1
    page.select_option("#filter-device", "lab-pi-01")
    page.click("#apply-filter")
    on_pi = lab.rows("SELECT count(*) FROM measurements WHERE device_id = 'lab-pi-01'")[0][0]
    assert page.text_content("#total") == str(on_pi)
    assert page.locator("#measurements tr").count() == min(on_pi, 50) + 1
    cells = page.locator("#measurements tr td:nth-child(3)").all_text_contents()
    assert set(cells) == {"lab-pi-01"}
    screenshot(page, "measurements")
    base = server.url.rstrip("/")
    csv = page.request.get(base + page.locator("#export-csv").get_attribute("href"))
    assert csv.ok and len(csv.text().strip().splitlines()) == on_pi + 1
    parquet = page.request.get(base + page.locator("#export-parquet").get_attribute("href"))
    assert parquet.ok and parquet.body()[:4] == b"PAR1"

    page.select_option("#compare-a", lab.tiny_sha)
    page.select_option("#compare-b", lab.wide_sha)
    page.click("#compare-button")
    verdict = page.text_content("#verdict")
    assert "slower" in verdict and "rounds" in verdict, verdict
    assert page.locator("#compare-distributions.js-plotly-plot").count() == 1
    rounds = page.locator("#compare-runs tr").count() - 1
    stored = [
        lab.rows(
            "SELECT count(*) FROM measurements WHERE device_id = 'lab-pi-01' "
            "AND model_sha256 = ? AND ok = 1",
            sha,
        )[0][0]
        for sha in (lab.tiny_sha, lab.wide_sha)
    ]
    assert rounds == min(*stored, 10) and f"{rounds} rounds" in verdict
    screenshot(page, "compare")


def test_a_filter_value_that_looks_like_sql_is_only_a_value(lab, server, page):
    before = lab.rows("SELECT count(*) FROM measurements")[0][0]
    page.goto(server.url + "measurements")
    page.fill("#filter-model", INJECTION)
    page.click("#apply-filter")
    assert page.text_content("#total") == "0"
    assert page.input_value("#filter-model") == INJECTION  # shown back as typed, escaped
    from urllib.parse import quote

    page.goto(server.url + f"measurements?device={quote(INJECTION)}&runtime={quote(INJECTION)}")
    assert page.text_content("#total") == "0"
    page.goto(server.url + f"compare?device=lab-pi-01&a={quote(INJECTION)}&b=kws.tflite")
    assert "0 runs of A" in page.text_content("#compare-problem")
    assert lab.rows("SELECT count(*) FROM measurements")[0][0] == before


def test_a_failing_gate_is_red_with_its_junit_and_html_files(lab, server, page):
    page.goto(server.url + "gates")
    run = page.locator(".gate-run").first
    assert run.locator("h2 .fail").text_content() == "FAIL"
    failed = run.locator("tr.failed")
    stored = lab.rows('SELECT device, "check" FROM gate_results WHERE passed = 0')
    assert failed.count() == len(stored) >= 1
    assert {
        (r.locator("td").nth(0).text_content(), r.locator("td").nth(1).text_content())
        for r in failed.all()
    } == set(stored)
    assert failed.first.locator("td.fail").evaluate("e => getComputedStyle(e).color") == RED
    assert "budget" in failed.first.text_content()
    passed = run.locator("td.pass")
    assert passed.count() == lab.rows("SELECT count(*) FROM gate_results WHERE passed = 1")[0][0]
    junit = page.request.get(
        server.url.rstrip("/") + run.locator("a", has_text="JUnit").get_attribute("href")
    )
    assert junit.ok and "<testsuite" in junit.text()
    html = page.request.get(
        server.url.rstrip("/") + run.locator("a", has_text="HTML").get_attribute("href")
    )
    assert html.ok and "lab-nuc" in html.text()
    screenshot(page, "gates")


def test_history_flags_the_build_that_got_slower_beyond_the_noise(lab, server, page):
    page.goto(server.url + "history?model=kws.tflite&by=tag")
    assert page.locator(".js-plotly-plot").count() == 1
    row = page.locator("#changes tr", has_text="lab-pi-01")
    cells = row.locator("td").all_text_contents()
    assert cells[:3] == ["lab-pi-01", "v1", "v2"]
    assert float(cells[3]) > 1 and cells[5] == "slower"
    assert row.locator("td.flag").count() == 1
    screenshot(page, "history")


def test_lineage_shows_the_tuned_artifact_its_parent_and_its_measurements(lab, server, page):
    lab.wait_tune()
    child = lab.rows(
        "SELECT sha256, parent_sha256 FROM artifacts WHERE format = 'tflite' "
        "AND recipe_json != '[]' ORDER BY created LIMIT 1"
    )
    assert child, "tune recorded no compressed artifact"
    page.goto(server.url + "lineage")
    assert (
        page.locator("#artifacts tr").count()
        == min(100, lab.rows("SELECT count(*) FROM artifacts")[0][0]) + 1
    )
    page.click(f"#artifacts a[href='/lineage?sha={child[0][0]}']")
    chain = page.locator("#lineage-chain tr")
    assert chain.count() == 3  # header, the artifact, the exported base model it came from
    assert "prune" in chain.nth(1).text_content()
    assert "export only" in chain.nth(2).text_content()
    measured = lab.rows(
        "SELECT device_id, count(*) FROM measurements WHERE model_sha256 = ? "
        "AND ok = 1 GROUP BY device_id",
        child[0][0],
    )
    rows = page.locator("#lineage-measurements tr")
    assert rows.count() == len(measured) + 1
    assert rows.nth(1).locator("td").nth(2).text_content() == str(measured[0][1])
    screenshot(page, "lineage")


def test_token_is_required_when_set_and_a_browser_keeps_it_in_a_cookie(lab, page, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-lab-token\n")
    token_file.chmod(0o600)
    with dashboard_server(lab.url, args=("--token-file", str(token_file))) as srv:
        denied = page.goto(srv.url + "devices")
        assert denied.status == 401 and "token required" in page.text_content("body")
        with pytest.raises(urllib.error.HTTPError) as wrong:
            urllib.request.urlopen(
                urllib.request.Request(
                    srv.url + "measurements", headers={"Authorization": "Bearer nope"}
                )
            )
        assert wrong.value.code == 401
        ok = urllib.request.urlopen(
            urllib.request.Request(
                srv.url + "measurements", headers={"Authorization": "Bearer s3cret-lab-token"}
            )
        )
        assert ok.status == 200
        page.goto(srv.url + "measurements?token=s3cret-lab-token")
        assert "token=" not in page.url  # redirected without it
        assert page.text_content("#total") == str(
            lab.rows("SELECT count(*) FROM measurements")[0][0]
        )
        page.goto(srv.url + "gates")  # the cookie carries it from now on
        assert page.locator(".gate-run").count() >= 1


def test_serving_beyond_loopback_without_tls_and_a_token_is_refused(lab):
    done = edgeloop(
        "dashboard",
        "--host",
        "0.0.0.0",
        "--port",
        "0",
        "--db",
        lab.url,
        home=lab.home,
        check=False,
        timeout=60,
    )
    assert done.returncode == 2
    assert "refusing to serve the dashboard on 0.0.0.0 without TLS" in done.stderr
    assert "and a token (--token-file FILE)" in done.stderr

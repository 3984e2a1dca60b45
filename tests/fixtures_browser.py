"""A real browser (Debian's chromium driven by Playwright) and a real dashboard server process.

`chromium()` skips with a reason when /usr/bin/chromium or Playwright is missing (Playwright's
own browser download is not used). `dashboard_server()` starts `edgeloop dashboard --port 0`
as its own process and waits for the line naming its address, never a fixed port or a sleep.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
READY = re.compile(r"edgeloop dashboard on (https?://\S+/)")
START_TIMEOUT_S = 60.0


_SHARED: dict[str, Any] = {}
"""The one Playwright and browser of the process: every module that imports `chromium` gets
a session fixture of its own, and Playwright's sync API runs only once per thread."""


@pytest.fixture(scope="session")
def chromium():
    """A headless chromium (the system's), shared by the session and by every test module
    that imports this fixture; closed when the last of them ends."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is absent (apt install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    if not _SHARED:
        pw = sync_playwright().start()
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        _SHARED.update(playwright=pw, browser=browser, users=0)
    _SHARED["users"] += 1
    try:
        yield _SHARED["browser"]
    finally:
        _SHARED["users"] -= 1
        if not _SHARED["users"]:
            _SHARED["browser"].close()
            _SHARED["playwright"].stop()
            _SHARED.clear()


class DashboardProcess:
    """`edgeloop dashboard` in a process of its own; `url` is where it listens."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "toolkit.cli.main", "dashboard", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        self.output: list[str] = []
        self.url = self._wait_ready()

    def _wait_ready(self) -> str:
        found: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.output.append(line)
                match = READY.search(line)
                if match and not found:
                    found.append(match.group(1))
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(START_TIMEOUT_S) or not found:
            self.stop()
            raise RuntimeError(f"dashboard did not start: {''.join(self.output)[-1500:]}")
        return found[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)


@contextmanager
def dashboard_server(
    db_url: str, env: Optional[dict[str, str]] = None, args: tuple[str, ...] = ()
) -> Iterator[DashboardProcess]:
    """Serves the dashboard over `db_url` until the block ends."""
    server = DashboardProcess(["--db", db_url, *args], {**os.environ, **(env or {})})
    try:
        yield server
    finally:
        server.stop()


def wait_until(page, expression: str, timeout_s: float = 30.0) -> None:
    """Polls the JavaScript `expression` in `page` until it is true.

    Playwright's `wait_for_function` compiles its predicate with `eval` inside the page, which
    the dashboard's Content-Security-Policy forbids (`script-src 'self'`); `page.evaluate`
    runs through the DevTools protocol, which the policy does not govern.

    Raises:
        TimeoutError: still false after `timeout_s` seconds (the expression is named).
    """
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{expression!r} still false after {timeout_s:.0f} s")
        page.wait_for_timeout(200)


def screenshot(page, name: str) -> None:
    """Saves the page as `<$EDGELOOP_SCREENSHOTS>/<name>.png` when that variable is set."""
    folder = os.environ.get("EDGELOOP_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)

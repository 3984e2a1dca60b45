"""The wheel is the product: built from the checkout, installed (not editable) into a fresh
virtual environment, README's tour runs from it outside the checkout.

Every other test runs on the editable install, where files the wheel forgets (profiles,
templates, static assets, migrations) are still found beside the code.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import urllib.request
import zipfile
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.wheel_venv import Venv, make_venv, project_wheel
from toolkit.devices.profile import load_profile
from toolkit.paths import REPO_ROOT

PACKAGES = ("toolkit", "device_agent")
DASHBOARD_READY = re.compile(r"edgeloop dashboard on (http://\S+/)")
START_TIMEOUT_S = 60.0


def _tracked_package_files() -> set[str]:
    """Files git tracks under the packages (what the wheel must carry), bytecode aside."""
    out = subprocess.run(["git", "ls-files", "--", *PACKAGES], cwd=REPO_ROOT, check=True,
                         capture_output=True, text=True).stdout.split()
    return {p for p in out if not p.endswith(".pyc") and (REPO_ROOT / p).is_file()}


def test_the_wheel_carries_every_package_file_and_the_bundled_profiles(tmp_path_factory):
    names = set(zipfile.ZipFile(project_wheel(tmp_path_factory)).namelist())

    missing = sorted(_tracked_package_files() - names)
    assert not missing, f"tracked package files not in the wheel: {missing}"
    profiles = {f"toolkit/bundled_profiles/{p.relative_to(REPO_ROOT / 'profiles')}"
                for p in (REPO_ROOT / "profiles").rglob("*.yaml")}
    assert profiles and profiles <= names, sorted(profiles - names)


@pytest.fixture(scope="module")
def host_venv(tmp_path_factory) -> Venv:
    """A venv with the wheel installed, not editable. Its dependencies are this Python's (a
    venv with --system-site-packages): installing torch and the host's ~130 packages into an
    empty venv takes minutes to a quarter of an hour here. The wheel's own code is checked to
    be what runs (`test_the_installed_wheel_runs_readmes_tour` looks at `__file__`)."""
    wheel = project_wheel(tmp_path_factory)
    root = tmp_path_factory.getbasetemp() / "venv-host-wheel"
    return make_venv(sys.executable, root, [str(wheel)], system_site_packages=True)


class _Assets(HTMLParser):
    """The stylesheets and scripts a page links to."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        found = dict(attrs)
        if tag == "link" and found.get("rel") == "stylesheet" and found.get("href"):
            self.urls.append(found["href"])
        elif tag == "script" and found.get("src"):
            self.urls.append(found["src"])


def _get(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read()


@contextmanager
def _dashboard(venv: Venv, cwd: Path, env: dict):
    """`edgeloop dashboard --port 0` of the venv until the block ends; yields its URL."""
    proc = subprocess.Popen([str(venv.bin / "edgeloop"), "dashboard", "--port", "0"], cwd=cwd,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in proc.stderr:
            lines.append(line)
            if DASHBOARD_READY.search(line):
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        ready.wait(START_TIMEOUT_S)
        found = [m[1] for m in map(DASHBOARD_READY.search, lines) if m]
        assert found, f"the wheel's dashboard did not start: {''.join(lines)[-2000:]}"
        yield found[0]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.mark.slow
def test_the_installed_wheel_runs_readmes_tour(host_venv, tmp_path):
    work, home = tmp_path / "work", tmp_path / "home"  # outside the checkout
    work.mkdir()
    env = {"EDGELOOP_HOME": str(home), "EDGELOOP_PROFILES": ""}
    site = host_venv.root / "lib"
    where = host_venv.run(
        "python", "-c", "import toolkit, device_agent; print(toolkit.__file__); "
        "print(device_agent.__file__)", cwd=work, env=env).stdout.split()
    assert all(Path(p).is_relative_to(site) for p in where), f"not the wheel's code: {where}"

    try:
        listed = host_venv.run("edgeloop", "devices", "list", cwd=work, env=env).stdout
        for path in sorted((REPO_ROOT / "profiles").glob("*.yaml")):
            assert load_profile(str(path)).name in listed, (path.name, listed)

        host_venv.run("edgeloop", "compress", "digits-cnn", "--out", "ref", "--export",
                      "tflite,onnx", cwd=work, env=env)
        assert (work / "ref" / "model.tflite").is_file() and (work / "ref" / "model.onnx").is_file()

        profiled = host_venv.run("edgeloop", "profile", "ref/model.tflite", cwd=work, env=env)
        assert "p50" in profiled.stdout + profiled.stderr, profiled.stdout

        current = host_venv.run("edgeloop", "db", "current", cwd=work, env=env).stdout
        revisions = re.search(r"results\.db: (\S+) \(this edgeloop: (\S+)\)", current)
        assert revisions and revisions[1] == revisions[2], current  # migrated to the head

        with _dashboard(host_venv, work, {**_environ(), **env}) as url:
            status, _, body = _get(url + "measurements")
            assert status == 200 and b"model.tflite" in body
            assets = _Assets()
            assets.feed(body.decode())
            assert any(u.endswith(".css") for u in assets.urls), assets.urls
            for asset in assets.urls:
                status, kind, content = _get(url + asset.lstrip("/"))
                assert status == 200 and content, asset
                assert ("css" if asset.endswith(".css") else "javascript") in kind, (asset, kind)
    finally:
        subprocess.run([str(host_venv.bin / "edgeloop"), "agent", "stop"], cwd=work,
                       env={**_environ(), **env}, capture_output=True, timeout=60)


def _environ() -> dict:
    """This process's environment without PYTHONPATH (which could point at the checkout)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

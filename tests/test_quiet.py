"""Quiet by default: a compress prints only edgeloop's own lines; the rest goes to edgeloop.log.

Runs the console script in a subprocess (third-party output comes from C++ libraries and
child processes as well as Python, so only a real process shows what a user sees).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# edgeloop's own lines of a compress: the pipeline's progress (stderr), the card (stdout)
OWN_LINES = re.compile(
    r"^(\S+: host accuracy [\d.]+% before \d+ step\(s\)"
    r"|\[\d+/\d+\] \S+: done in "
    r"|host accuracy after: "
    r"|model\.(tflite|onnx): \d+ bytes, "
    r"|card written to "
    r"|(model|accuracy|parameters|weights|pt2|tflite|onnx) +\S)"
)
# what the libraries print: glog/absl prefixes, warnings, torchao, the converter, XNNPACK
THIRD_PARTY = re.compile(r"^[IWEF]\d{4} |Warning|WARNING|torchao|absl|oneDNN|XNNPACK|"
                         r"site-packages|__new__")


def compress(out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("TF_CPP_MIN_LOG_LEVEL", "GLOG_minloglevel", "LITERT_TORCH_SHOW_PROGRESS"):
        env.pop(name, None)  # as a user's shell has them
    return subprocess.run(
        [sys.executable, "-m", "toolkit.cli.main", "compress", "digits-cnn", "--out", str(out),
         *extra],
        capture_output=True, text=True, timeout=600, env=env,
    )


@pytest.fixture(scope="module")
def quiet_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quiet") / "out"
    done = compress(out, "--export", "tflite,onnx")
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done


def test_compress_prints_only_its_own_lines(quiet_run):
    _, done = quiet_run
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert lines, "compress printed nothing"
    foreign = [line for line in lines if THIRD_PARTY.search(line)]
    assert not foreign, "third-party output on the terminal:\n" + "\n".join(foreign)
    unknown = [line for line in lines if not OWN_LINES.match(line)]
    assert not unknown, "lines that are not edgeloop's:\n" + "\n".join(unknown)


def test_the_log_file_holds_the_third_party_output(quiet_run):
    out, done = quiet_run
    log = (out / "edgeloop.log").read_text()
    third_party = [line for line in log.splitlines() if THIRD_PARTY.search(line)]
    assert len(third_party) >= 3, log[-3000:]
    assert "XNNPACK" in log  # C++ (file descriptor 2)
    assert "torchao" in log  # a Python logger
    terminal = {line for line in (done.stdout + done.stderr).splitlines() if line.strip()}
    assert not terminal & set(log.splitlines()), "a line went to both"


def test_verbose_shows_the_third_party_output(tmp_path):
    done = compress(tmp_path / "out", "-v")
    assert done.returncode == 0, done.stderr[-3000:]
    foreign = [line for line in done.stderr.splitlines() if THIRD_PARTY.search(line)]
    assert len(foreign) >= 3, done.stderr[-3000:]
    assert any("XNNPACK" in line for line in foreign)

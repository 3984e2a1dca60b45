"""Two real models of clearly different cost for A/B tests, and the `edgeloop` CLI as a user
runs it against a private EDGELOOP_HOME (whose long-lived local agent the caller stops)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.model_files import build_tflite, tiny_cnn

IDLE_S = "120"  # a test agent left behind by a failed teardown goes away by itself


def wide_cnn() -> torch.nn.Module:
    """The tiny CNN's layout, 8x and 8x wider: about 30x its compute (8x8 input)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 64, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(64, 128, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(128 * 8 * 8, 10),
    ).eval()


def build_pair(folder: Path) -> tuple[Path, Path]:
    """(tiny.tflite, wide.tflite) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    return (build_tflite(tiny_cnn(), folder / "tiny.tflite"),
            build_tflite(wide_cnn(), folder / "wide.tflite"))


def edgeloop(*args: str, home: Path, check: bool = True, timeout: float = 300,
             env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs `edgeloop ARGS` (the console entry) with EDGELOOP_HOME=home."""
    full_env = {k: v for k, v in os.environ.items() if k != "EDGELOOP_LOCAL_AGENT"}
    full_env.update({"EDGELOOP_HOME": str(home), "EDGELOOP_AGENT_IDLE_S": IDLE_S, **(env or {})})
    done = subprocess.run([sys.executable, "-m", "toolkit.cli.main", *args],
                          capture_output=True, text=True, env=full_env, timeout=timeout)
    if check:
        assert done.returncode == 0, done.stderr
    return done

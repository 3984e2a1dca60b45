"""Bad input stops before any work: one line naming what and what was expected, exit code 2.

Each case goes through the real command line (`toolkit.cli.main.main`, the console script's
entry) in this process, so it is fast; one case runs the console script in a subprocess to
show that nothing else is printed around the line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from toolkit.cli.main import INFEASIBLE_EXIT, SETUP_ERROR_EXIT, main
from toolkit.errors import SetupError

FAST_S = 5.0  # the check is one forward pass; imports are warmed by the fixture below

NET = textwrap.dedent('''
    from torch import nn


    def build():
        """A 3-channel conv net for 96x96 inputs, 10 classes."""
        model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                              nn.Flatten(), nn.Linear(8, 10))
        model.input_shape = (1, 3, 96, 96)
        return model


    def tiny():
        """A 10-class linear model for 1x8x8 inputs."""
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        model.input_shape = (1, 1, 8, 8)
        return model


    def broken():
        raise ValueError("width must be positive")
''')

BRANCHY = textwrap.dedent('''
    from torch import nn


    class Branchy(nn.Module):
        """Runs in torch, but torch.export cannot trace its data-dependent branch."""

        input_shape = (1, 1, 8, 8)

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            y = self.fc(x.flatten(1))
            if float(y.sum()) > 0:
                return y
            return -y


    def build():
        return Branchy()
''')


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """net.py, branchy.py and .npz datasets in one folder."""
    folder = tmp_path_factory.mktemp("setup")
    (folder / "net.py").write_text(NET)
    (folder / "branchy.py").write_text(BRANCHY)
    rng = np.random.default_rng(0)
    np.savez(folder / "labels20.npz", x=rng.random((100, 1, 8, 8), dtype=np.float32),
             y=np.arange(100) % 20)
    np.savez(folder / "small32.npz", x=rng.random((60, 3, 32, 32), dtype=np.float32),
             y=np.arange(60) % 10)
    import toolkit.compress.pipeline  # noqa: F401 - warm the imports the timing leaves out
    import toolkit.tune.runner  # noqa: F401

    return folder


def edgeloop(capsys, *args: str) -> tuple[int, list[str], float]:
    """Runs the CLI entry in-process: (exit code, every non-empty output line, seconds)."""
    capsys.readouterr()
    started = time.monotonic()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    elapsed = time.monotonic() - started
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
    return code, lines, elapsed


def assert_one_line(code: int, lines: list[str], elapsed: float, *expected: str) -> None:
    assert code == SETUP_ERROR_EXIT, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: "), lines
    for text in expected:
        assert text in lines[0], lines[0]
    assert elapsed < FAST_S, f"took {elapsed:.1f} s"


def test_a_byo_model_without_data_that_does_not_fit_digits_says_pass_data(files, capsys):
    out = files / "out-byo"
    code, lines, elapsed = edgeloop(capsys, "compress", f"{files}/net.py:build", "--out", out)
    assert_one_line(code, lines, elapsed, "net.py:build", "1x3x96x96", "'digits'", "1x8x8",
                    "pass --data with 3x96x96 samples")
    assert not (out / "model.pt2").exists() and not (out / "card.json").exists()


def test_samples_of_another_shape_are_an_error_never_resized(files, capsys):
    code, lines, elapsed = edgeloop(capsys, "compress", f"{files}/net.py:build", "--data",
                                    files / "small32.npz", "--out", files / "out-small")
    assert_one_line(code, lines, elapsed, "1x3x96x96", "small32.npz", "3x32x32",
                    "expected 3x96x96 samples")


def test_labels_beyond_the_models_outputs_are_refused(files, capsys):
    code, lines, elapsed = edgeloop(capsys, "compress", f"{files}/net.py:tiny", "--data",
                                    files / "labels20.npz", "--out", files / "out-labels")
    assert_one_line(code, lines, elapsed, "labels20.npz", "labels span 0–19", "10 outputs",
                    "expected labels 0–9")


def test_an_input_shape_of_the_wrong_rank_names_the_shape(files, capsys):
    code, lines, elapsed = edgeloop(capsys, "compress", f"{files}/net.py:build",
                                    "--input-shape", "1,3,96", "--out", files / "out-rank")
    assert_one_line(code, lines, elapsed, "net.py:build", "input shape 1x3x96", "failed",
                    "--input-shape")


def test_a_model_function_that_raises_puts_its_exception_in_the_line(files, capsys):
    code, lines, elapsed = edgeloop(capsys, "compress", f"{files}/net.py:broken",
                                    "--out", files / "out-broken")
    assert_one_line(code, lines, elapsed,
                    "net.py:broken raised ValueError: width must be positive (net.py:")


def test_tune_with_a_model_that_does_not_fit_stops_before_any_device(files, capsys):
    runs = files / "runs-shape"
    code, lines, elapsed = edgeloop(capsys, "tune", f"{files}/net.py:build", "--out", runs)
    assert_one_line(code, lines, elapsed, "net.py:build", "pass --data")
    assert not runs.exists() or not any(runs.rglob("trials.sqlite"))


def test_tune_whose_base_model_cannot_be_built_is_a_setup_error_not_infeasible(files, capsys):
    code, lines, _ = edgeloop(capsys, "tune", f"{files}/branchy.py:build", "--out",
                              files / "runs-branchy", "--trials", "2", "--min-seconds", "0.05")
    assert code == SETUP_ERROR_EXIT != INFEASIBLE_EXIT, lines
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, lines
    assert "the base model" in errors[0] and "could not be built" in errors[0], errors
    assert not any("INFEASIBLE" in line for line in lines), lines


def test_evaluate_refuses_data_of_another_size_before_any_device(files, capsys, tmp_path):
    import litert_torch
    import torch

    sys.path.insert(0, str(files))
    try:
        import net
    finally:
        sys.path.remove(str(files))
    artifact = tmp_path / "net96.tflite"
    litert_torch.convert(net.build().eval(), (torch.zeros(1, 3, 96, 96),)).export(str(artifact))
    # an address where no agent answers: reaching the device would be another error
    code, lines, elapsed = edgeloop(capsys, "evaluate", artifact, "--data",
                                    files / "small32.npz", "--device", "127.0.0.1:9")
    assert_one_line(code, lines, elapsed, "net96.tflite", "1x3x96x96", "3x32x32",
                    "never resizes")


def test_evaluate_on_device_checks_before_pushing(tmp_path):
    from toolkit.data import load_dataset
    from toolkit.evaluate import evaluate_on_device

    class NoDevice:
        def push(self, path):  # noqa: ANN001
            raise AssertionError("pushed before the check")

    artifact = tmp_path / "m.tflite"
    import litert_torch
    import torch

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10)).eval()
    litert_torch.convert(model, (torch.zeros(1, 3, 32, 32),)).export(str(artifact))
    with pytest.raises(SetupError, match="takes inputs of shape 1x3x32x32 .* 1x8x8 samples"):
        evaluate_on_device(artifact, load_dataset("digits"), NoDevice())


def test_the_console_script_prints_only_the_one_line(files):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run(
        [sys.executable, "-m", "toolkit.cli.main", "compress", "net.py:build",
         "--out", str(files / "out-sub")],
        capture_output=True, text=True, timeout=120, env=env, cwd=files,
    )
    assert done.returncode == SETUP_ERROR_EXIT, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "error: model 'net.py:build' takes inputs of shape 1x3x96x96 but dataset 'digits' "
        "holds 1x8x8 samples; pass --data with 3x96x96 samples"
    ], done.stderr

"""Metrics, not only top-1: the built-in metrics on hand-computable cases, user metrics from a
folder, the one-line errors, and `evaluate --metric` / `validate --min-metric` on a real agent."""

from __future__ import annotations

import importlib.util
import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from toolkit.errors import ConfigError, SetupError
from toolkit.quality import METRICS, Signature, get_metric

needs_pycocotools = pytest.mark.skipif(importlib.util.find_spec("pycocotools") is None,
                                       reason="pycocotools is not installed")


def test_top1_and_top5_count_the_samples_whose_label_is_among_the_best_scores():
    scores = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert get_metric("top1").compute(scores, np.array([1, 0, 0])) == pytest.approx(200 / 3)
    six = np.array([[6, 5, 4, 3, 2, 1], [1, 2, 3, 4, 5, 6.0]])
    # sample 0: label 5 has the lowest score (6th) -> miss; sample 1: label 2 is 4th -> hit
    assert get_metric("top5").compute(six, np.array([5, 2])) == 50.0
    assert get_metric("top1").units == "%" and get_metric("top5").direction == "higher"


def test_f1_is_the_macro_average_of_the_per_class_f1():
    scores = np.array([[1, 0], [1, 0], [0, 1], [0, 1.0]])  # predicts 0, 0, 1, 1
    # class 0: precision 1/2, recall 1 -> 2/3; class 1: precision 1, recall 2/3 -> 4/5
    value = get_metric("f1").compute(scores, np.array([0, 1, 1, 1]))
    assert value == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_mse_and_psnr_of_a_constant_error():
    outputs, targets = np.zeros((2, 1, 2, 2)), np.full((2, 1, 2, 2), 0.5)
    assert get_metric("mse").compute(outputs, targets) == pytest.approx(0.25)
    assert get_metric("psnr").compute(outputs, targets) == pytest.approx(10 * math.log10(4))
    assert get_metric("psnr").compute(targets, targets) == math.inf
    assert get_metric("mse").direction == "lower" and get_metric("psnr").units == "dB"


def test_miou_averages_intersection_over_union_of_the_classes_present():
    logits = np.zeros((1, 2, 2, 2))
    logits[0, 0, 0, 0] = 1.0  # predicted [[0, 1], [1, 1]]
    logits[0, 1] += np.array([[0, 1], [1, 1]])
    targets = np.array([[[0, 0], [1, 1]]])
    # class 0: 1 / 2; class 1: 2 / 3
    assert get_metric("miou").compute(logits, targets) == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_perplexity_is_the_exponent_of_the_mean_cross_entropy():
    uniform = np.zeros((2, 3, 4))
    assert get_metric("perplexity").compute(uniform, np.zeros((2, 3))) == pytest.approx(4.0)
    sure = np.log(np.array([[[0.5, 0.25, 0.25], [0.25, 0.5, 0.25]]]))
    # p(target) = 0.5 at both positions -> exp(-ln 0.5) = 2
    assert get_metric("perplexity").compute(sure, np.array([[0, 1]])) == pytest.approx(2.0)
    assert get_metric("perplexity").direction == "lower"


@needs_pycocotools
def test_map50_by_pycocotools_of_a_perfect_and_a_half_found_image():
    targets = np.array([[[0, 0, 10, 10, 0], [20, 20, 30, 30, 0]]], dtype=np.float32)
    both = np.array([[[0, 0, 10, 10, 0.9, 0], [20, 20, 30, 30, 0.8, 0]]], dtype=np.float32)
    assert get_metric("map50").compute(both, targets) == pytest.approx(1.0)
    assert get_metric("map50_95").compute(both, targets) == pytest.approx(1.0)
    one = both.copy()
    one[0, 1, 5] = -1  # the second detection is padding
    # recall reaches 0.5 at precision 1: COCO's 101-point interpolation gives 51 / 101
    assert get_metric("map50").compute(one, targets) == pytest.approx(51 / 101)
    boxes, scores, classes = both[..., :4], both[..., 4], both[..., 5]
    assert get_metric("map50").compute((boxes, scores, classes), targets) == pytest.approx(1.0)


def test_every_built_in_metric_declares_a_direction_and_what_it_needs():
    assert set(METRICS) >= {"top1", "top5", "f1", "mse", "psnr", "miou", "perplexity"}
    for metric in METRICS.values():
        assert metric.direction in ("higher", "lower") and metric.needs


def test_a_metric_that_does_not_fit_the_outputs_is_one_line_naming_it_and_the_shapes():
    four = Signature(((1, 10, 4), (1, 10), (1, 10), (1,)), (359,), True)
    with pytest.raises(SetupError) as caught:
        get_metric("top1").check(four)
    line = str(caught.value)
    assert "\n" not in line and "'top1'" in line and "4 outputs" in line and "1x10x4" in line
    with pytest.raises(SetupError, match=r"'top1' needs .* output has shape 8"):
        get_metric("top1").check(Signature(((8,),), (8,), True))
    with pytest.raises(SetupError, match="'psnr' needs .* differ in shape"):
        get_metric("psnr").check(Signature(((1, 1, 8, 8),), (359, 1, 4, 4), False))
    with pytest.raises(SetupError, match="'miou' needs .* not integers"):
        get_metric("miou").check(Signature(((1, 3, 8, 8),), (359, 8, 8), False))
    get_metric("psnr").check(Signature(((1, 1, 8, 8),), (359, 1, 8, 8), False))  # fits


def test_unknown_metrics_and_missing_or_contradicting_directions_are_refused():
    with pytest.raises(ConfigError, match="'accuracy': expected one of top1"):
        get_metric("accuracy")
    with pytest.raises(ConfigError, match="needs --metric-direction"):
        get_metric("scores.py:f")
    with pytest.raises(ConfigError, match="lower-is-better; --metric-direction higher"):
        get_metric("perplexity", "higher")


def _metric_folder(root: Path) -> Path:
    folder = root / "user_metrics"
    folder.mkdir()
    (folder / "helpers.py").write_text(
        "import numpy as np\n\n"
        "def hits(outputs, targets):\n"
        "    return np.asarray(outputs).argmax(axis=1) == np.asarray(targets)\n")
    (folder / "metrics.py").write_text(
        "from helpers import hits\n\n"
        "def share(outputs, targets):\n"
        "    return float(hits(outputs, targets).mean())\n\n"
        "def broken(outputs, targets):\n"
        "    raise ValueError('boxes must be x1 y1 x2 y2')\n")
    return folder / "metrics.py"


def test_a_user_metric_from_a_folder_imports_its_sibling(tmp_path):
    import sys

    path = _metric_folder(tmp_path)
    metric = get_metric(f"{path}:share", "higher")
    assert metric.user and metric.name == f"{path}:share"
    value = metric.compute(np.array([[0, 1], [1, 0], [0, 1.0]]), np.array([1, 0, 0]))
    assert value == pytest.approx(2 / 3)
    assert "helpers" not in sys.modules  # the sibling's plain name does not leak


def test_a_user_metric_that_raises_is_one_line_with_its_exception(tmp_path):
    metric = get_metric(f"{_metric_folder(tmp_path)}:broken", "lower")
    with pytest.raises(SetupError) as caught:
        metric.compute(np.zeros((2, 2)), np.zeros(2))
    line = str(caught.value)
    assert "\n" not in line and ":broken' raised ValueError: boxes must be x1 y1 x2 y2" in line
    assert "metrics.py:" in line  # where it raised


# --- on a real agent: a small denoiser, exported by edgeloop to .tflite ----------------------


class Denoiser(torch.nn.Module):
    """Three convolutions, image in, image out (1 x 8 x 8)."""

    input_shape = (1, 1, 8, 8)

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@pytest.fixture(scope="module")
def denoiser(tmp_path_factory):
    """A denoiser trained briefly on noisy digits, its .tflite and a .npz of noisy -> clean."""
    from sklearn.datasets import load_digits

    from toolkit.export import export_tflite

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("denoise")
    clean = (load_digits().data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 0.2, clean.shape), 0, 1)
    data = root / "denoise.npz"
    np.savez(data, x=noisy.astype(np.float32), y=clean)
    model = Denoiser()
    optimiser = torch.optim.Adam(model.parameters(), 1e-2)
    x, y = torch.from_numpy(noisy.astype(np.float32)), torch.from_numpy(clean)
    for _ in range(60):
        optimiser.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimiser.step()
    model.eval()
    tflite = export_tflite(model, Denoiser.input_shape, root / "denoiser.tflite")
    noisy_psnr = get_metric("psnr").compute(noisy, clean)
    return tflite, data, noisy_psnr


@pytest.mark.slow
def test_evaluate_psnr_of_a_denoiser_on_the_device_matches_the_host(denoiser):
    from toolkit.cli.evaluate import evaluate as command

    tflite, data, noisy_psnr = denoiser
    result = CliRunner().invoke(command, [str(tflite), "--data", str(data), "--device", "local",
                                          "--metric", "psnr", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    psnr = payload["psnr"]
    assert payload["metric"] == "psnr" and "accuracy" not in payload
    assert psnr["direction"] == "higher" and psnr["units"] == "dB"
    assert psnr["host_basis"] == "host runtime" and payload["n"] == 359
    assert psnr["device"] == pytest.approx(psnr["host"], abs=0.01)
    assert psnr["device"] > noisy_psnr  # it denoises: the score is of real outputs

    text = CliRunner().invoke(command, [str(tflite), "--data", str(data), "--metric", "mse"])
    assert text.exit_code == 0, text.output
    assert "mse" in text.output and "lower is better" in text.output


@pytest.mark.slow
def test_evaluate_refuses_a_metric_that_does_not_fit_before_pushing(denoiser):
    from toolkit.cli.main import main

    tflite, data, _ = denoiser
    with pytest.raises(SystemExit) as code:
        main(["evaluate", str(tflite), "--data", str(data), "--metric", "top1"])
    assert code.value.code == 2  # bad input, before any work


@pytest.mark.slow
def test_validate_min_metric_fails_a_candidate_below_the_bound_with_a_red_junit_case(
        denoiser, tmp_path):
    from toolkit.cli.validate import validate as command

    tflite, data, _ = denoiser
    common = [str(tflite), "--device", "local", "--data", str(data), "--runs", "5",
              "--min-seconds", "0.01", "--no-store"]
    junit = tmp_path / "fail.xml"
    failed = CliRunner().invoke(command, [*common, "--min-metric", "psnr=99",
                                          "--max-metric", "mse=1", "--junit", str(junit)])
    assert failed.exit_code == 1, failed.output
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    psnr = next(c for n, c in cases.items() if n.endswith(".metric.psnr"))
    failure = psnr.find("failure")
    assert failure is not None
    assert "psnr" in failure.get("message") and "< floor 99 dB (--min-metric)" in \
        failure.get("message")
    mse = next(c for n, c in cases.items() if n.endswith(".metric.mse"))
    assert mse.find("failure") is None  # the ceiling held

    passed = CliRunner().invoke(command, [*common, "--min-metric", "psnr=10",
                                          "--junit", str(tmp_path / "pass.xml")])
    assert passed.exit_code == 0, passed.output
    assert "metric.psnr" in passed.output


def test_validate_refuses_a_floor_on_a_lower_is_better_metric(denoiser):
    from toolkit.cli.main import main

    tflite, data, _ = denoiser
    with pytest.raises(SystemExit) as code:
        main(["validate", str(tflite), "--device", "local", "--data", str(data),
              "--min-metric", "mse=0.1", "--no-store"])
    assert code.value.code == 1
    with pytest.raises(SystemExit) as code:
        main(["validate", str(tflite), "--device", "local", "--data", str(data),
              "--min-metric", "psnr", "--no-store"])
    assert code.value.code == 2  # NAME=VALUE is a usage error

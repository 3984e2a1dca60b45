"""On-device evaluation: artifacts run through a real agent's Infer, batched, against torch."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner

from toolkit.compress.pipeline import compress
from toolkit.data import load_dataset
from toolkit.evaluate import evaluate_on_device

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("evaluate")
    fp32 = compress("digits-cnn", None, "digits", root / "fp32", export=("tflite", "onnx"))
    int8 = compress("digits-cnn", {"quantize": {"scheme": "int8-static"}}, "digits",
                    root / "int8", export=("tflite", "onnx"))
    return fp32, int8, load_dataset("digits")


class CountingClient:
    """The real client, counting Infer calls."""

    def __init__(self, client) -> None:
        self.client, self.infer_calls = client, 0

    def infer(self, *args, **kwargs):
        self.infer_calls += 1
        return self.client.infer(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.client, name)


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_fp32_artifact_on_the_device_matches_torch(built, agent, fmt):
    fp32, _, data = built
    client = CountingClient(agent)
    result = evaluate_on_device(fp32.artifacts[fmt], data, client,
                                reference_model=fp32.torch_model, batch_size=64)
    assert result.n == len(data.test_x)
    assert client.infer_calls == math.ceil(result.n / 64)  # batched, not one call per sample
    assert result.accuracy_pct == pytest.approx(fp32.card.artifacts[fmt].host_accuracy_pct)
    assert result.max_abs_diff < 1e-3 and result.top1_agreement_pct == 100.0
    assert result.to_json()["accuracy"] == result.accuracy_pct


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_int8_artifact_accuracy_on_the_device_is_within_a_point_of_float(built, agent, fmt):
    fp32, int8, data = built
    result = evaluate_on_device(int8.artifacts[fmt], data, agent,
                                reference_model=int8.torch_model, batch_size=100)
    assert result.accuracy_pct >= fp32.card.accuracy_before_pct - 1.0
    assert result.top1_agreement_pct >= 90.0
    assert result.max_abs_diff > 0  # int8 arithmetic really differs from float
    assert result.model_sha256 == int8.card.artifacts[fmt].sha256


def test_cli_evaluate_prints_on_device_accuracy_as_json(built):
    from toolkit.cli.evaluate import evaluate as command

    _, int8, _ = built
    folder = int8.card_path.parent
    result = CliRunner().invoke(command, [str(folder / "model.tflite"), "--data", "digits",
                                          "--device", "local", "--reference-model",
                                          str(folder / "model.pt2"), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["accuracy"] >= int8.card.accuracy_before_pct - 1.0
    assert payload["n"] == 359 and payload["top1_agreement_pct"] >= 90.0

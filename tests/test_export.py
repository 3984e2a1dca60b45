"""Exporters: TFLite and ONNX artifacts that run on the host runtimes and agree with torch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from toolkit.data import load_dataset
from toolkit.errors import ExportError
from toolkit.export import check_parity, export_onnx, export_tflite
from toolkit.export.host_runtime import run_artifact
from toolkit.export.plan import activation_range
from toolkit.models import load_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    loaded = load_model("digits-cnn")
    data = load_dataset("digits")
    out = tmp_path_factory.mktemp("export")
    tflite = export_tflite(loaded.module, loaded.input_shape, out / "m.tflite")
    onnx_path = export_onnx(loaded.module, loaded.input_shape, out / "m.onnx")
    return loaded, data, tflite, onnx_path


def test_fp32_tflite_agrees_with_torch_within_fp32_tolerance(setup):
    loaded, data, tflite, _ = setup
    report = check_parity(tflite, loaded.module, data.test_x[:128], "fp32")
    assert report.ok and report.n == 128
    assert report.max_abs_diff <= report.tolerance and report.top1_agreement_pct == 100.0


def test_fp32_onnx_agrees_with_torch_and_takes_any_batch(setup):
    loaded, data, _, onnx_path = setup
    report = check_parity(onnx_path, loaded.module, data.test_x[:128], "fp32")
    assert report.ok
    graph_input = onnx.load(str(onnx_path)).graph.input[0]
    assert graph_input.type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    outputs = run_artifact(onnx_path, data.test_x[:100].numpy())
    assert outputs.shape == (100, 10)


def test_artifacts_reach_the_torch_accuracy_on_the_host_runtime(setup):
    loaded, data, tflite, onnx_path = setup
    with torch.no_grad():
        expected = int((loaded.module(data.test_x).argmax(1) == data.test_y).sum())
    for path in (tflite, onnx_path):
        outputs = run_artifact(path, data.test_x.numpy())
        assert int(np.sum(outputs.argmax(1) == data.test_y.numpy())) == expected


def test_parity_failure_names_the_artifact_and_the_difference(setup):
    loaded, data, tflite, _ = setup
    other = load_model("digits-mlp").module
    with pytest.raises(ExportError, match=r"m\.tflite: fp32 parity with torch failed: max abs"):
        check_parity(tflite, other, data.test_x[:32], "fp32")
    report = check_parity(tflite, other, data.test_x[:32], "fp32", raise_on_failure=False)
    assert not report.ok and report.max_abs_diff > report.tolerance


def test_unconvertible_model_is_an_export_error_naming_the_file(tmp_path):
    class DataDependent(torch.nn.Module):
        def forward(self, x):
            return x[x > 0.5]  # output shape depends on the values

    with pytest.raises(ExportError, match=r"bad\.tflite"):
        export_tflite(DataDependent(), (1, 4), tmp_path / "bad.tflite")


def test_host_runtime_refuses_unknown_file_types(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"nothing")
    with pytest.raises(ExportError, match="expected a .tflite or .onnx"):
        run_artifact(path, np.zeros((1, 2), np.float32))


def test_activation_range_statistics_narrow_the_range_on_outliers():
    values = np.concatenate([np.random.default_rng(0).normal(0, 1, 100_000), [80.0]])
    lo_mm, hi_mm = activation_range(values, "minmax", 99.99, 4.0)
    lo_p, hi_p = activation_range(values, "percentile", 99.9, 4.0)
    lo_s, hi_s = activation_range(values, "mean-std", 99.99, 3.0)
    assert hi_mm == 80.0
    assert 2.5 < hi_p < 4.0 and -4.0 < lo_p < -2.5
    assert 2.5 < hi_s < 3.5 and lo_s < 0
    assert activation_range(np.array([2.0, 3.0]), "minmax", 99.99, 4.0) == (0.0, 3.0)


def _int8_rounding_mse(values: np.ndarray, lo: float, hi: float) -> float:
    scale = (hi - lo) / 255.0
    zero = np.round(-lo / scale)
    q = np.clip(np.round(values / scale) + zero, 0, 255)
    return float(np.mean(((q - zero) * scale - values) ** 2))


def test_mse_range_has_less_int8_error_than_minmax_and_percentile_on_a_heavy_tail():
    """Laplace values: the mse range clips the tail, less than the 99.9th percentile does,
    and rounds the values with less error than either."""
    values = np.random.default_rng(0).laplace(0.0, 1.0, 100_000)
    lo_mm, hi_mm = activation_range(values, "minmax", 99.99, 4.0)
    lo_p, hi_p = activation_range(values, "percentile", 99.9, 4.0)
    lo_e, hi_e = activation_range(values, "mse", 99.99, 4.0)
    assert lo_mm < lo_e < lo_p < 0 < hi_p < hi_e < hi_mm
    error = _int8_rounding_mse(values, lo_e, hi_e)
    assert error < _int8_rounding_mse(values, lo_mm, hi_mm)
    assert error < _int8_rounding_mse(values, lo_p, hi_p)


def test_mse_range_keeps_the_whole_range_when_no_value_is_an_outlier():
    """Uniform values: every clip costs more than it saves, so the range is min-max."""
    values = np.random.default_rng(0).uniform(-1.0, 3.0, 50_000)
    lo, hi = activation_range(values, "mse", 99.99, 4.0)
    assert lo == pytest.approx(values.min()) and hi == pytest.approx(values.max())

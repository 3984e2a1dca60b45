"""The `quantize` step: real int8/fp16 artifacts, smaller, accurate, agreeing with torch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from toolkit.compress.base import StepContext
from toolkit.compress.steps.quantize.qconfig import RangeObserver
from toolkit.compress.steps.quantize.step import QuantizeStep
from toolkit.data import load_dataset
from toolkit.errors import RecipeError
from toolkit.export import check_parity, export_onnx, export_tflite
from toolkit.export.host_runtime import run_artifact
from toolkit.models import load_model
from toolkit.models.train import accuracy

pytestmark = pytest.mark.slow
MAX_DROP_POINTS = 1.5


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    torch.set_num_threads(1)
    loaded = load_model("digits-cnn")
    data = load_dataset("digits")
    out = tmp_path_factory.mktemp("quantize")
    fp32 = {
        "tflite": export_tflite(loaded.module, loaded.input_shape, out / "fp32.tflite"),
        "onnx": export_onnx(loaded.module, loaded.input_shape, out / "fp32.onnx"),
    }
    return loaded, data, out, fp32, accuracy(loaded.module, data.test_loader())


def quantize(base, params: dict, formats=("tflite", "onnx")):
    """Applies the step, exports each format, checks parity; returns model, report, paths."""
    loaded, data, out, _, _ = base
    ctx = StepContext(data=data, input_shape=loaded.input_shape)
    step = QuantizeStep(params)
    step.check_model(loaded.module)
    model, report = step.apply(loaded.module, ctx)
    plan = ctx.artifacts["quantization"]
    tag = "-".join(str(v) for v in params.values() if not isinstance(v, (list, dict)))
    paths = {}
    for fmt in formats:
        exporter = export_tflite if fmt == "tflite" else export_onnx
        paths[fmt] = exporter(loaded.module, loaded.input_shape, out / f"{tag}.{fmt}", plan)
        check_parity(paths[fmt], model, data.test_x[:200], plan.dtype)  # raises on failure
    return model, report, paths


def host_accuracy(path, data) -> float:
    outputs = run_artifact(path, data.test_x.numpy())
    return 100.0 * float(np.mean(outputs.argmax(1) == data.test_y.numpy()))


def test_int8_static_tflite_is_much_smaller_and_as_accurate(base):
    loaded, data, _, fp32, float_acc = base
    model, report, paths = quantize(base, {"scheme": "int8-static", "calibration": 128})
    ratio = fp32["tflite"].stat().st_size / paths["tflite"].stat().st_size
    assert ratio >= 3.5
    assert host_accuracy(paths["tflite"], data) >= float_acc - MAX_DROP_POINTS
    assert report.figures["simulated_accuracy_pct"] >= float_acc - MAX_DROP_POINTS
    assert report.figures["weight_bytes_fp32"] == 4 * report.figures["weight_bytes_quantized"]
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(paths["tflite"]))
    assert interpreter.get_input_details()[0]["dtype"] == np.int8  # a real int8 model
    onnx_model = onnx.load(str(paths["onnx"]))
    assert any(node.op_type == "QuantizeLinear" for node in onnx_model.graph.node)
    assert paths["onnx"].stat().st_size < fp32["onnx"].stat().st_size / 3
    assert host_accuracy(paths["onnx"], data) >= float_acc - MAX_DROP_POINTS


@pytest.mark.parametrize("observer", ["percentile", "mean-std", "mse"])
def test_int8_static_with_other_observers_per_tensor(base, observer):
    _, data, _, _, float_acc = base
    params = {"scheme": "int8-static", "observer": observer, "granularity": "per-tensor",
              "calibration": 64}
    _, report, paths = quantize(base, params, formats=("tflite",))
    assert report.figures["observer"] == observer and report.figures["calibration_samples"] == 64
    assert host_accuracy(paths["tflite"], data) >= float_acc - MAX_DROP_POINTS


def test_percentile_and_mean_std_observers_clip_outliers_that_minmax_keeps():
    values = torch.cat([torch.randn(50_000), torch.tensor([60.0])])
    scales = {}
    for method in ("minmax", "percentile", "mean-std"):
        observer = RangeObserver(method=method, percentile=99.9, k=3.0, dtype=torch.int8,
                                 quant_min=-128, quant_max=127)
        observer(values)
        scales[method] = float(observer.calculate_qparams()[0])
    assert scales["percentile"] < scales["minmax"] / 5
    assert scales["mean-std"] < scales["minmax"] / 5


def test_int8_dynamic_keeps_float_io_and_int8_weights(base):
    _, data, _, fp32, float_acc = base
    _, _, paths = quantize(base, {"scheme": "int8-dynamic"})
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(paths["tflite"]))
    assert interpreter.get_input_details()[0]["dtype"] == np.float32
    weights = [t for t in interpreter.get_tensor_details() if tuple(t["shape"]) == (128, 512)]
    assert weights and all(t["dtype"] == np.int8 for t in weights)
    assert fp32["tflite"].stat().st_size / paths["tflite"].stat().st_size >= 3.5
    assert host_accuracy(paths["tflite"], data) >= float_acc - MAX_DROP_POINTS


def test_fp16_halves_the_file_and_stays_within_fp16_tolerance(base):
    _, data, _, fp32, float_acc = base
    _, _, paths = quantize(base, {"scheme": "fp16"})
    ratio = fp32["tflite"].stat().st_size / paths["tflite"].stat().st_size
    assert 1.7 <= ratio <= 2.1
    initializers = onnx.load(str(paths["onnx"])).graph.initializer
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in initializers)
    assert host_accuracy(paths["tflite"], data) >= float_acc - 0.5


def test_qat_trains_then_exports_int8(base):
    _, data, _, _, float_acc = base
    model, report, paths = quantize(base, {"scheme": "qat", "epochs": 1, "lr": 1e-4})
    assert report.figures["scheme"] == "qat"
    assert accuracy(model, data.test_loader()) >= float_acc - MAX_DROP_POINTS
    assert host_accuracy(paths["tflite"], data) >= float_acc - MAX_DROP_POINTS


def test_mixed_keep_float_leaves_that_layer_float_in_both_artifacts(base):
    _, data, _, _, float_acc = base
    params = {"scheme": "mixed", "keep_float": ["classifier.2"], "float_precision": "fp32"}
    _, report, paths = quantize(base, params)
    assert report.figures["layer_precision"]["classifier.2"] == "fp32"
    assert report.figures["layer_precision"]["classifier.0"] == "int8"
    from ai_edge_litert.interpreter import Interpreter

    tensors = Interpreter(model_path=str(paths["tflite"])).get_tensor_details()
    by_shape = {tuple(t["shape"]): t["dtype"] for t in tensors}
    assert by_shape[(10, 128)] == np.float32 and by_shape[(128, 512)] == np.int8
    graph = onnx.load(str(paths["onnx"])).graph
    float_weights = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    weight_of = {}
    for node in graph.node:
        if node.op_type in ("Gemm", "MatMul"):
            scope = "classifier.2" if "classifier.2" in str(node.metadata_props) else "other"
            weight_of.setdefault(scope, []).append(node.input[1])
    assert all(w in float_weights for w in weight_of["classifier.2"])  # fp32 weight, no QDQ
    assert not any(w in float_weights for w in weight_of["other"])  # int8 through DQ
    assert host_accuracy(paths["tflite"], data) >= float_acc - MAX_DROP_POINTS


def test_mixed_automatic_choice_ranks_every_layer_and_keeps_the_most_sensitive(base):
    loaded, data, _, _, _ = base
    ctx = StepContext(data=data, input_shape=loaded.input_shape)
    _, report = QuantizeStep({"scheme": "mixed", "auto_keep": 1}).apply(loaded.module, ctx)
    errors = report.figures["sensitivity_output_error"]
    drops = report.figures["sensitivity_drop_pct"]
    layers = {"features.0", "features.3", "classifier.0", "classifier.2"}
    assert set(errors) == layers and all(e >= 0 for e in errors.values())
    kept = [n for n in layers if report.figures["layer_precision"][n] == "fp16"]
    assert len(kept) == 1
    worst = max(layers, key=lambda n: (drops[n], errors[n]))
    assert kept == [worst]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"scheme": "int4"}, r"quantize\.scheme: expected one of .*int8-static.*got 'int4'"),
        ({}, r"quantize\.scheme: expected one of"),
        ({"scheme": "int8-static", "calibraton": 10}, r"quantize\.calibraton: expected one of"),
        ({"scheme": "int8-static", "epochs": 2},
         r"quantize\.epochs: applies only to scheme qat, not int8-static"),
        ({"scheme": "int8-static", "calibration": 0},
         r"quantize\.calibration: expected an integer"),
        ({"scheme": "int8-static", "observer": "kl"}, r"quantize\.observer: expected one of"),
        ({"scheme": "int8-static", "observer": "percentile", "percentile": 120},
         r"quantize\.percentile: expected a number in \(50, 100\]"),
        ({"scheme": "mixed", "layers": {"classifier.0": "int4"}}, r"quantize\.layers"),
        ({"scheme": "qat", "epochs": "two"}, r"quantize\.epochs: expected an integer"),
    ],
)
def test_bad_parameters_are_refused_naming_the_key(params, message):
    with pytest.raises(RecipeError, match=message):
        QuantizeStep(params)


def test_unknown_layer_name_is_refused_before_any_work_listing_the_layers():
    model = load_model("digits-mlp").module
    step = QuantizeStep({"scheme": "mixed", "keep_float": ["net.99"]})
    with pytest.raises(RecipeError, match=r"keep_float: expected Conv/Linear layer names .*net\.1"):
        step.check_model(model)

"""An exported `.onnx` file (plain torch.onnx.export, not edgeloop's) as `compress`'s input:
ONNX Runtime's quantizer, a real agent runs the result, the card says what a file cannot do."""

from __future__ import annotations

import functools
import json

import pytest

from tests import ab_models

edgeloop = functools.partial(ab_models.edgeloop, timeout=600)  # compress of an ONNX file


@pytest.fixture(scope="module")
def exported(digits_cnn, tmp_path_factory):
    """The digits CNN as a user's training team hands it over: torch.onnx.export, weights in a
    separate .data file (the exporter's default for dynamo)."""
    import torch

    path = tmp_path_factory.mktemp("user") / "cnn.onnx"
    torch.onnx.export(digits_cnn.eval(), (torch.zeros(1, 1, 8, 8),), str(path), dynamo=True)
    return path


def recipe(tmp_path, text: str):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_int8_static_qdq_file_runs_on_a_real_agent_smaller_and_agrees(exported, tmp_path,
                                                                      isolated_home):
    import onnx

    out = tmp_path / "out"
    done = edgeloop("compress", str(exported), "--recipe",
                    str(recipe(tmp_path, "quantize: {scheme: int8-static, calibration: 256}\n")),
                    "--data", "digits", "--out", str(out), "--metric", "top1", "--json",
                    home=isolated_home)
    card = json.loads(done.stdout)["card"]
    artifact = card["artifacts"]["onnx"]
    assert card["format"] == "onnx" and artifact["dtype"] == "int8"
    assert artifact["size_bytes"] < card["parent_size_bytes"]
    assert card["check"]["top1_agreement_pct"] >= 98.0
    assert card["check"]["metric"]["name"] == "top1"
    assert card["steps"][0]["figures"]["calibration_samples"] == 256
    assert "prune" in card["unavailable_steps"] and "torchvision" in card["unavailable_steps"][
        "prune"]
    ops = {node.op_type for node in onnx.load(str(out / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    scales = [t for t in onnx.load(str(out / "model.onnx")).graph.initializer
              if t.name.endswith("weight_scale")]
    assert any(len(t.dims) == 1 and t.dims[0] > 1 for t in scales)  # per-channel weights
    profiled = json.loads(edgeloop("profile", str(out / "model.onnx"), "--runs", "10",
                                   "--min-seconds", "0.1", "--json", home=isolated_home).stdout)
    assert profiled["ok"] and profiled["runtime"] == "onnx" and profiled["latency"]["n"] >= 10


def test_int8_dynamic_quantizes_an_onnx_file(exported, tmp_path, isolated_home):
    out = tmp_path / "out"
    done = edgeloop("compress", str(exported), "--recipe",
                    str(recipe(tmp_path, "quantize: {scheme: int8-dynamic}\n")),
                    "--data", "digits", "--out", str(out), "--json", home=isolated_home)
    card = json.loads(done.stdout)["card"]
    assert card["artifacts"]["onnx"]["dtype"] == "int8"
    assert card["artifacts"]["onnx"]["size_bytes"] < card["parent_size_bytes"]
    assert card["check"]["top1_agreement_pct"] >= 98.0


def test_a_pytorch_step_on_an_onnx_file_fails_in_one_line_before_work(exported, tmp_path,
                                                                       isolated_home):
    out = tmp_path / "out"
    text = "prune: {amount: 0.3}\nquantize: {scheme: int8-static}\n"
    done = edgeloop("compress", str(exported), "--recipe", str(recipe(tmp_path, text)),
                    "--data", "digits", "--out", str(out), home=isolated_home, check=False)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "step 1 (prune): unavailable for a .onnx input" in lines[0]
    assert "torchvision" in lines[0]
    assert not out.exists()  # nothing was done


def test_an_op_the_quantizer_does_not_know_is_named(tmp_path, isolated_home):
    from onnx import TensorProto, helper

    node = helper.make_node("Frobnicate", ["x"], ["y"], name="frob_1", domain="com.example")
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.example", 1)])
    path = tmp_path / "custom.onnx"
    path.write_bytes(model.SerializeToString())
    done = edgeloop("compress", str(path), "--recipe",
                    str(recipe(tmp_path, "quantize: {scheme: int8-dynamic}\n")),
                    "--data", "digits", "--out", str(tmp_path / "out"), home=isolated_home,
                    check=False)
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "node 'frob_1' (com.example.Frobnicate)" in done.stderr


def test_fp16_by_onnx_runtimes_converter_halves_the_file_and_agrees(exported, tmp_path,
                                                                   isolated_home):
    done = edgeloop("compress", str(exported), "--recipe",
                    str(recipe(tmp_path, "quantize: {scheme: fp16}\n")),
                    "--data", "digits", "--out", str(tmp_path / "out"), "--json",
                    home=isolated_home)
    card = json.loads(done.stdout)["card"]
    assert card["artifacts"]["onnx"]["dtype"] == "fp16"
    assert card["artifacts"]["onnx"]["size_bytes"] < 0.6 * card["parent_size_bytes"]
    assert card["check"]["parity"]["ok"] and card["check"]["top1_agreement_pct"] >= 99.0

"""`profile --inputs samples.npz`: the timed loop on a real agent cycles through real samples,
the row records them, and samples that do not fit the model's inputs are one line."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from tests.ab_models import edgeloop

WIDTH = 256


@pytest.fixture(scope="module")
def data_dependent(tmp_path_factory):
    """An ONNX model whose work is one 128x128 MatMul per positive input value (a Loop whose
    trip count is the count of x > 0): random normal inputs run ~128 iterations, all-negative
    samples none."""
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((128, 128)).astype(np.float32) / 12, "w")
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("MatMul", ["v_in", "w"], ["mm"]),
         helper.make_node("Tanh", ["mm"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1, 128])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1, 128])])
    nodes = [
        helper.make_node("Greater", ["x", "zero"], ["positive"]),
        helper.make_node("Cast", ["positive"], ["ones"], to=TensorProto.INT64),
        helper.make_node("ReduceSum", ["ones"], ["count"], keepdims=0),
        helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["v0"]),
        helper.make_node("Loop", ["count", "true", "v0"], ["y"], body=body),
    ]
    graph = helper.make_graph(
        nodes, "data_dependent",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 128])],
        initializer=[weights, numpy_helper.from_array(np.array(0, np.float32), "zero"),
                     numpy_helper.from_array(np.array(True), "true"),
                     numpy_helper.from_array(np.array([0], np.int64), "starts"),
                     numpy_helper.from_array(np.array([128], np.int64), "ends"),
                     numpy_helper.from_array(np.array([1], np.int64), "axes")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("dd") / "data_dependent.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def samples(tmp_path, name: str = "x", shape=(8, WIDTH), dtype=np.float32, value=-1.0):
    path = tmp_path / f"samples_{name}_{'x'.join(map(str, shape))}_{np.dtype(dtype).name}.npz"
    np.savez(path, **{name: np.full(shape, value, dtype)})
    return path


def test_real_inputs_change_what_a_data_dependent_model_measures_and_the_row_says_so(
        data_dependent, tmp_path):
    home = tmp_path / "home"
    quiet = samples(tmp_path)  # no positive value: the loop never runs
    args = ("--runs", "50", "--min-seconds", "0.2", "--json")
    random_run = json.loads(edgeloop("profile", str(data_dependent), *args, home=home).stdout)
    real_run = json.loads(edgeloop("profile", str(data_dependent), *args, "--inputs", str(quiet),
                                   home=home).stdout)
    assert random_run["ok"] and real_run["ok"]
    # ~128 MatMuls per run against none: the samples, not chance, set the time
    assert real_run["latency"]["p50_ms"] < random_run["latency"]["p50_ms"]
    rows = json.loads(edgeloop("results", "--format", "json", home=home).stdout)
    sha = hashlib.sha256(quiet.read_bytes()).hexdigest()
    assert [(bool(r["real_inputs"]), r["inputs_sha256"] or "") for r in rows] == [
        (False, ""), (True, sha)]
    assert json.loads(rows[1]["options_json"])["inputs_sha256"] == sha
    table = edgeloop("profile", str(data_dependent), "--runs", "5", "--min-seconds", "0.05",
                     "--inputs", str(quiet), home=home).stdout
    assert f"real samples, sha256:{sha[:12]}" in table


@pytest.mark.parametrize("name,shape,dtype,given", [
    ("x", (4, 100), np.float32, "given float32 (4, 100)"),
    ("x", (4, WIDTH), np.int64, "given int64 (4, 256)"),
])
def test_samples_that_do_not_fit_the_inputs_are_one_line_naming_the_input(
        data_dependent, tmp_path, name, shape, dtype, given):
    bad = samples(tmp_path, name, shape, dtype)
    done = edgeloop("profile", str(data_dependent), "--runs", "5", "--inputs", str(bad),
                    "--json", home=tmp_path / "home", check=False)  # --json: no progress lines
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "input 'x': expected float32 (N, 256)" in lines[0] and given in lines[0]
    assert "(BAD_REQUEST)" in lines[0]  # the request's samples, not a model that failed


def test_a_pickled_samples_file_is_refused_before_anything_is_pushed(data_dependent, tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, x=np.array([{"a": 1}], dtype=object))
    done = edgeloop("profile", str(data_dependent), "--inputs", str(path),
                    home=tmp_path / "home", check=False)
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "not an .npz of plain arrays" in done.stderr

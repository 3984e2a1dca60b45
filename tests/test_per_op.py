"""Per-operator profiles on a real agent: every runtime returns a table after the timed window
(ONNX Runtime's profiler, torch.profiler by node, ExecuTorch's ETDump, LiteRT's op histogram);
the table reaches `edgeloop profile --per-op`, the results JSON, and `sensitivity`."""

from __future__ import annotations

import json

import pytest

from tests.ab_models import edgeloop
from tests.model_files import INPUT_SHAPE
from toolkit.measurement import BenchmarkOptions
from toolkit.op_costs import layer_costs, layer_of, ops_lines

QUICK = BenchmarkOptions(
    warmup_runs=3,
    warmup_min_seconds=0.01,
    min_runs=20,
    min_seconds=0.2,
    idle_seconds=0,
    power_sensor="none",
)
PER_OP = BenchmarkOptions(**{**QUICK.set_fields(), "per_op": True})
SOURCES = {
    "onnx": "onnxruntime-profiler",
    "pt2": "torch-profiler",
    "pte": "etdump",
    "tflite": "tflite-op-histogram",
}


@pytest.fixture(scope="module")
def files(model_files, tmp_path_factory):
    """The tiny CNN as .onnx, .pt2, .tflite and (where executorch is installed) .pte."""
    paths = {"onnx": model_files.onnx, "pt2": model_files.pt2, "tflite": model_files.tflite}
    try:
        from toolkit.export.pte import export_pte
    except ImportError:
        return paths
    try:
        import executorch  # noqa: F401
    except ImportError:
        return paths
    out = tmp_path_factory.mktemp("per-op")
    paths["pte"] = export_pte(model_files.torch_model, INPUT_SHAPE, out / "tiny.pte")
    return paths


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_per_op_returns_a_table_after_the_timed_window_and_leaves_the_figures_alone(
    agent, files, kind
):
    if kind not in files:
        pytest.skip("executorch is not installed: no .pte to profile")
    plain = agent.benchmark(files[kind], QUICK)
    m = agent.benchmark(files[kind], PER_OP)
    assert plain.ok and m.ok, m.error_message
    assert not plain.ops and not plain.ops_source  # nothing unless asked for
    assert m.ops and m.ops_source == SOURCES[kind]
    # the timed figures are what a plain profile gives: the same kind, count rules, fields
    assert m.latency.n >= QUICK.min_runs and m.timed_window_s >= QUICK.min_seconds
    assert 0 < m.latency.min_ms <= m.latency.p50_ms <= m.latency.max_ms
    assert m.memory.peak_rss_mb >= 0 and m.memory.model_size_bytes == plain.memory.model_size_bytes
    assert m.options.per_op and not plain.options.per_op
    assert all(op.name and op.op_type and op.calls >= 0 for op in m.ops)
    if kind == "tflite":  # LiteRT's Python API times no op: counts only, said plainly
        assert all(op.mean_ms == 0 and op.share == 0 for op in m.ops)
        assert "no per-operator timing" in m.ops_note
        assert {op.name for op in m.ops} >= {"CONV_2D", "FULLY_CONNECTED"}
    else:
        assert sum(op.mean_ms for op in m.ops) > 0
        assert sum(op.share for op in m.ops) == pytest.approx(1.0, abs=1e-6)


def test_torch_rows_name_the_module_each_op_came_from(agent, files):
    m = agent.benchmark(files["pt2"], PER_OP)
    assert m.ok, m.error_message
    # tiny_cnn is Sequential(conv, relu, conv, relu, flatten, linear): modules "0" … "5"
    assert {layer_of(op) for op in m.ops} >= {"0", "2", "5"}
    costs = layer_costs(m.ops)
    assert costs["0"].mean_ms > 0 and costs["5"].mean_ms > 0
    assert sum(c.share for c in costs.values()) == pytest.approx(1.0, abs=1e-6)
    conv = [op for op in m.ops if layer_of(op) == "2"]
    assert conv and conv[0].op_type == "aten.conv2d"


def test_the_text_table_lists_the_costliest_ops_first_and_the_note(agent, files):
    m = agent.benchmark(files["onnx"], PER_OP)
    lines = ops_lines(m.ops, m.ops_source, m.ops_note)
    assert "onnxruntime-profiler" in lines[0]
    assert "mean ms" in lines[1] and "share" in lines[1]
    times = [float(line.split()[-2]) for line in lines[2 : 2 + len(m.ops)]]
    assert times == sorted(times, reverse=True)


def test_profile_per_op_shows_the_table_and_stores_it_with_the_measurement(files, tmp_path):
    home = tmp_path / "home"
    quick = ("--runs", "20", "--min-seconds", "0.1", "--per-op")
    text = edgeloop("profile", str(files["pt2"]), *quick, home=home).stdout
    assert "p50" in text and "per-op" in text and "torch-profiler" in text
    assert "by layer:" in text
    record = json.loads(
        edgeloop("profile", str(files["onnx"]), *quick, "--json", home=home).stdout
    )
    assert record["ok"] and record["ops_source"] == "onnxruntime-profiler"
    assert record["ops"] and set(record["ops"][0]) == {
        "name",
        "op_type",
        "calls",
        "mean_ms",
        "share",
    }
    stored = json.loads(edgeloop("results", "--format", "json", home=home).stdout)
    assert stored  # both profiles stored; the JSON record keeps the ops (Measurement.from_json)


def test_sensitivity_shows_each_layers_device_cost_from_a_per_op_profile(
    agent, files, model_files, digits, tmp_path
):
    from toolkit.compress.pipeline import compress

    m = agent.benchmark(files["pt2"], PER_OP)
    ops_json = tmp_path / "ops.json"
    ops_json.write_text(json.dumps(m.to_json()))
    table = tmp_path / "sens.csv"
    recipe = [
        {
            "sensitivity": {
                "ratios": [0.5],
                "method": "magnitude",
                "ops_from": str(ops_json),
                "table": str(table),
            }
        }
    ]
    lines: list[str] = []
    result = compress(
        model_files.torch_model,
        recipe,
        digits,
        tmp_path / "out",
        export=["onnx"],
        input_shape=INPUT_SHAPE,
        log=lines.append,
    )
    figures = next(s.figures for s in result.card.steps if s.key == "sensitivity")
    costs = figures["layer_cost_ms"]
    assert set(costs) == {"0", "2", "5"} and all(v > 0 for v in costs.values())
    assert sum(figures["layer_cost_share"].values()) <= 1.0 + 1e-6
    assert any(line.startswith("sensitivity 2:") and "on the device" in line for line in lines)
    csv = table.read_text().splitlines()
    assert csv[0].endswith("cost_ms,cost_share")


def test_sensitivity_refuses_an_ops_file_without_per_op_rows(
    agent, files, model_files, digits, tmp_path
):
    from toolkit.compress.pipeline import compress
    from toolkit.errors import RecipeError

    m = agent.benchmark(files["onnx"], QUICK)
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(m.to_json()))
    recipe = [{"sensitivity": {"ratios": [0.5], "ops_from": str(plain)}}]
    with pytest.raises(RecipeError, match=r"sensitivity\.ops_from: .*no per-op rows"):
        compress(
            model_files.torch_model,
            recipe,
            digits,
            tmp_path / "out",
            export=["onnx"],
            input_shape=INPUT_SHAPE,
        )


def test_etdump_rows_keep_two_delegates_apart_and_name_kernels_outside_them():
    pytest.importorskip("executorch", reason="executorch is not installed")
    from device_agent.runtimes.etdump import ProfileEvent
    from device_agent.runtimes.executorch_rt import _ops_table

    def event(name, instruction, debug="", start=0, end=0):
        return ProfileEvent(name, 0, instruction, -1, debug, start, end)

    one_run = [
        event("", 0, "Convolution (NHWC, QS8) IGEMM #1", 0, 3000),
        event("DELEGATE_CALL", 0, "", 0, 4000),
        event("native_call_as_strided_copy.out", 1, "", 4000, 5000),
        event("OPERATOR_CALL", 1, "", 4000, 5500),
        event("", 2, "Fully Connected (NC, QS8) GEMM #1", 6000, 8000),
        event("DELEGATE_CALL", 2, "", 5500, 9000),
        event("Method::execute", 0, "", 0, 9000),
    ]
    table = _ops_table(one_run * 2, runs=2)
    rows = {row.name: row for row in table.rows}
    assert set(rows) == {
        "Convolution (NHWC, QS8) IGEMM #1 (call 0)",
        "native_call_as_strided_copy.out",
        "Fully Connected (NC, QS8) GEMM #1 (call 2)",
    }
    assert rows["native_call_as_strided_copy.out"].op_type == "aten::as_strided_copy.out"
    assert rows["Convolution (NHWC, QS8) IGEMM #1 (call 0)"].mean_ms == pytest.approx(0.003)
    assert all(row.calls == 1 for row in table.rows) and table.source == "etdump"


def test_tune_with_per_op_shows_the_base_models_operator_table_in_its_report(tmp_path):
    from toolkit.search.space import Dimension, SearchSpace
    from toolkit.tune.budgets import BudgetRequest
    from toolkit.tune.config import TuneConfig
    from toolkit.tune.live import LiveView
    from toolkit.tune.runner import run_tune

    space = SearchSpace((Dimension("prune_amount", (0.0,)),), finetune_epochs=0)
    config = TuneConfig(
        strategy="grid",
        space=space,
        out_dir=tmp_path,
        bench=BenchmarkOptions(**{**PER_OP.set_fields(), "timeout_seconds": 120}),
        budgets=BudgetRequest(ratios={"latency_p90_ms": 10.0}),
    )
    result = run_tune(config, live=LiveView(0, enabled=False))
    report = (tmp_path / config.run_id / "report.html").read_text()
    assert "Where the time goes (per operator)" in report
    assert "base on local" in report and "tflite-op-histogram" in report
    assert "CONV_2D" in report and "no per-operator timing" in report
    assert result.base["figures"]["local"]["latency_p90_ms"] > 0

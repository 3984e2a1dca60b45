"""ExecuTorch `.pte`: exported (fp32 and int8 through the TFLite path's PT2E graph), checked
against torch, profiled and inferred on a real local agent; a malformed `.pte` is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("executorch", reason="executorch is not installed (optional extra)")
pytestmark = pytest.mark.slow

from device_agent.protocol.formats import detect_format  # noqa: E402
from toolkit.compress.pipeline import compress  # noqa: E402
from toolkit.data import Dataset  # noqa: E402
from toolkit.export import check_parity  # noqa: E402
from toolkit.export.pte import DELEGATE, export_pte, pte_calls, undelegated  # noqa: E402
from toolkit.measurement import BenchmarkOptions  # noqa: E402
from toolkit.models.zoo import ZOO, build  # noqa: E402

QUICK = BenchmarkOptions(
    warmup_runs=3,
    warmup_min_seconds=0.01,
    min_runs=20,
    min_seconds=0.2,
    idle_seconds=0,
    power_sensor="none",
)
INT8 = [{"quantize": {"scheme": "int8-static", "calibration": 64}}]


@pytest.fixture(scope="module")
def digits_pte(digits_cnn, digits, tmp_path_factory):
    """digits-cnn as fp32 (export_pte) and int8 (compress --export pte) programs."""
    out = tmp_path_factory.mktemp("pte")
    fp32 = export_pte(digits_cnn, digits_cnn.input_shape, out / "fp32.pte")
    lines: list[str] = []
    result = compress(digits_cnn, INT8, digits, out / "int8", export=["pte"], log=lines.append)
    return fp32, result, lines


@pytest.fixture(scope="module")
def ds_cnn():
    """The zoo's DS-CNN (1×49×10 MFCC input), BatchNorm statistics settled on noise."""
    torch.manual_seed(0)
    model = build("ds_cnn").train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn((8, *ZOO["ds_cnn"].input_shape[1:])))
    return model.eval()


def test_a_real_pte_is_recognised_from_its_first_bytes(digits_pte):
    fp32, _, _ = digits_pte
    head = fp32.read_bytes()[:16]
    assert head[4:8] == b"ET12"  # the flatbuffer file identifier of executorch 1.5
    assert detect_format(head) == "pte"


def test_fp32_pte_agrees_with_torch_within_the_fp32_tolerance(digits_pte, digits_cnn, digits):
    fp32, _, _ = digits_pte
    report = check_parity(fp32, digits_cnn, digits.test_x[:128], "fp32")
    assert report.ok and report.top1_agreement_pct == 100.0
    assert pte_calls(fp32) == {DELEGATE: 1}  # the whole graph runs in one XNNPACK call


def test_int8_pte_lowers_the_tflite_paths_pt2e_graph_into_one_xnnpack_call(digits_pte):
    fp32, result, lines = digits_pte
    record = result.card.artifacts["pte"]
    assert record.dtype == "int8" and record.ops == {DELEGATE: 1}
    assert record.parity["ok"] and record.parity["top1_agreement_pct"] >= 99.0
    assert record.size_bytes < 0.35 * fp32.stat().st_size  # int8 weights
    assert not any("warning" in line for line in lines)


def test_zoo_ds_cnn_exports_fp32_and_int8_pte_that_agree_with_torch(ds_cnn, tmp_path):
    shape = ZOO["ds_cnn"].input_shape
    fp32 = export_pte(ds_cnn, shape, tmp_path / "ds_cnn.pte")
    x = torch.randn((64, *shape[1:]), generator=torch.Generator().manual_seed(1))
    assert check_parity(fp32, ds_cnn, x, "fp32").ok
    with torch.no_grad():
        y = ds_cnn(x).argmax(1)
    data = Dataset("noise", x, y, x, y, 10, tuple(shape[1:]))
    lines: list[str] = []
    result = compress(
        ds_cnn, INT8, data, tmp_path / "int8", export=["pte"], input_shape=shape, log=lines.append
    )
    record = result.card.artifacts["pte"]
    assert record.parity["ok"] and record.ops.get(DELEGATE, 0) >= 1
    # XNNPACK leaves the int8 flatten after the global pool to the portable kernels (a copy
    # between two delegate calls); the card and the log name it instead of hiding it
    left = undelegated(record.ops)
    assert set(left) <= {"aten::as_strided_copy.out", "aten::view_copy.out"}
    if left:
        assert "not delegated to XNNPACK" in record.note
        assert any("outside XNNPACK" in line and "as_strided_copy" in line for line in lines)


def test_pte_is_profiled_on_a_real_agent_with_the_executorch_runtime(agent, digits_pte):
    fp32, result, _ = digits_pte
    for path in (fp32, result.artifacts["pte"]):
        m = agent.benchmark(path, QUICK)
        assert m.ok, m.error_message
        assert m.runtime == "executorch" and m.runtime_version
        assert m.latency.n >= QUICK.min_runs and 0 < m.latency.p50_ms <= m.latency.p99_ms
        assert m.memory.model_size_bytes == path.stat().st_size


def test_pte_infer_on_the_agent_matches_torch(agent, digits_pte, digits_cnn, digits):
    fp32, result, _ = digits_pte
    x = digits.test_x[:40].numpy()
    with torch.no_grad():
        expected = digits_cnn(torch.from_numpy(x)).numpy()
    (out,) = agent.infer(fp32, [x])  # batch 40 through a batch-1 program: chunked by the agent
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    (q,) = agent.infer(result.artifacts["pte"], [x])
    assert (q.argmax(1) == expected.argmax(1)).mean() >= 0.95


def test_a_malformed_pte_fails_to_load_and_the_agent_lives_on(agent, digits_pte, tmp_path):
    fp32, _, _ = digits_pte
    truncated = tmp_path / "truncated.pte"
    truncated.write_bytes(fp32.read_bytes()[:400])  # a real header, the rest cut off
    scrambled = tmp_path / "scrambled.pte"
    data = bytearray(fp32.read_bytes())
    rng = np.random.default_rng(0)
    for i in range(64, len(data), 97):
        data[i] = int(rng.integers(256))
    scrambled.write_bytes(bytes(data))
    for path in (truncated, scrambled):
        m = agent.benchmark(path, QUICK)
        assert not m.ok and m.error_kind == "LOAD_FAILED", (m.error_kind, m.error_message)
        assert m.error_message
        with pytest.raises(Exception, match="load"):
            agent.infer(path, [np.zeros((1, 1, 8, 8), np.float32)])
        assert agent.health().ok

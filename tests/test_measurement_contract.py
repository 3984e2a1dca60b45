"""One measurement contract, owned once: the types, the store's columns, option precedence,
and error kinds as an enum for Benchmark and Infer.

Store and precedence tests need no agent; the options test and the Infer tests use a real
agent on loopback (the `agent` fixture).

Stand-in: the store tests convert `_result()`, a BenchmarkResult built in the test with every
part set (power, thermal, TFLM arena, device state) as an agent sends it, with `INFO` for the
device; no agent on this machine fills every part (no power meter, no microcontroller), and the
figures must be known to check each column.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from device_agent.protocol import edgeloop_pb2 as pb
from toolkit.devices.precedence import resolve_options
from toolkit.devices.profile import DeviceProfile
from toolkit.errors import (
    AgentError,
    ConfigError,
    ErrorKind,
    ResultsStoreError,
    RuntimeUnavailableError,
    UnsafeModelError,
)
from toolkit.measurement import (
    COLUMNS,
    SECTIONS,
    BenchmarkOptions,
    Measurement,
)
from toolkit.results.store import FIXED, SCHEMA_VERSION, ResultsStore

INFO = SimpleNamespace(device_id="dev-1", hostname="box", arch="aarch64", agent_version="9.9",
                       protocol_version=1)
# The store's flat columns before the types owned them (schema v1), as a v1 database has them.
V1_COLUMNS = [
    "timestamp", "ok", "error_kind", "error_message", "device_id", "device_hostname",
    "device_arch", "model_sha256", "model_name", "runtime", "runtime_version", "threads",
    "accelerator", "n", "mean_ms", "std_ms", "cv", "min_ms", "p50_ms", "p90_ms", "p95_ms",
    "p99_ms", "max_ms", "load_ms", "first_inference_ms", "peak_rss_mb", "model_size_bytes",
    "tflm_arena_bytes", "power_sensor", "mean_w", "idle_w", "energy_mj", "warnings",
    "toolkit_version", "agent_version", "protocol_version",
]  # fmt: skip


def _result(**overrides) -> pb.BenchmarkResult:
    """A full BenchmarkResult as an agent sends it: every part set, device state included."""
    r = pb.BenchmarkResult(
        sha256="ab" * 32, runtime="tflite", runtime_version="1.4.0", threads=2,
        load_ms=12.5, first_inference_ms=3.25, timed_window_s=1.5, wall_s=2.75,
        started_unix=1_700_000_000.0, accelerator="cpu", warnings=["CV 12% is high"],
    )  # fmt: skip
    r.options.CopyFrom(pb.BenchmarkOptions(min_runs=20, min_seconds=1.0, cooldown_s=2.0,
                                           cpu_affinity=[2, 3]))
    r.latency.CopyFrom(pb.LatencyStats(n=4, mean_ms=1.5, std_ms=0.1, cv=0.07, min_ms=1.4,
                                       p50_ms=1.5, p90_ms=1.6, p95_ms=1.65, p99_ms=1.7,
                                       max_ms=1.7, samples_ms=[1.4, 1.5, 1.5, 1.7]))
    r.memory.CopyFrom(pb.MemoryStats(peak_rss_mb=4.5, baseline_rss_mb=60.0,
                                     model_size_bytes=1234, tflm_arena_bytes=8192))
    r.power.CopyFrom(pb.PowerStats(sensor="command", rate_hz=50.0, samples=75, mean_w=3.0,
                                   idle_w=1.0, energy_per_inference_mj=3.0, method="samples"))
    r.thermal.CopyFrom(pb.ThermalStats(temperature_c_before=41.0, temperature_c_after=47.5,
                                       temperature_rise_c=6.5, temperature_rose=True,
                                       cooldown_waited_s=2.0, cpu_freq_mhz_before=1800.0))
    r.device_state.CopyFrom(pb.DeviceState(os="Linux", kernel="6.1.0", cpu_model="Cortex-A76",
                                           python_version="3.11.2", governor="performance",
                                           cpu_freq_mhz=1800.0, affinity=[2, 3]))
    for key, value in overrides.items():
        setattr(r, key, value)
    return r


def _stored_columns(path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [row[1] for row in db.execute("PRAGMA table_info(measurements)")]


# ---------------------------------------------------------------- types and the store


def test_a_measurement_round_trips_proto_to_row_to_record(tmp_path):
    """proto -> Measurement (one constructor per part) -> store row -> record, unchanged."""
    m = Measurement.from_proto(_result(), INFO, model_name="net.tflite")
    assert m.ok and m.error_kind is ErrorKind.NONE
    prov = m.provenance
    assert (prov.device_id, prov.device_arch, prov.runtime, prov.threads) == (
        "dev-1", "aarch64", "tflite", 2)
    assert (prov.os, prov.kernel, prov.cpu_model, prov.governor, prov.affinity) == (
        "Linux", "6.1.0", "Cortex-A76", "performance", (2, 3))
    assert prov.cpu_freq_mhz == 1800.0 and prov.python_version == "3.11.2"
    assert prov.options.cpu_affinity == (2, 3) and prov.options.cooldown_s == 2.0
    assert m.latency.load_ms == 12.5 and m.latency.samples_ms == (1.4, 1.5, 1.5, 1.7)
    assert m.memory.tflm_arena_bytes == 8192 and m.power.energy_per_inference_mj == 3.0
    assert m.thermal.temperature_rose and m.thermal.temperature_c_after == 47.5
    assert m.thermal.cpu_freq_mhz_after is None  # not read: None, never 0
    assert m.device_id == "dev-1" and m.p50_ms == 1.5  # a part's field, read on the whole

    store = ResultsStore(tmp_path / "results.db")
    row_id = store.append(m, run_id="r1")
    assert store.record(row_id) == m
    row = store.query(run_id="r1").iloc[0]
    assert row["energy_mj"] == 3.0 and row["power_sensor"] == "command"
    assert row["governor"] == "performance" and row["affinity"] == "2,3"
    assert row["temperature_rose"] and row["kernel"] == "6.1.0" and row["load_ms"] == 12.5
    assert row["error_kind"] is None and row["warnings"] == "CV 12% is high"

    failed = Measurement.from_proto(
        _result(error_kind=pb.ERROR_KIND_TIMEOUT, error_message="killed at 300 s"), INFO)
    assert failed.error_kind is ErrorKind.TIMEOUT and failed.error_kind == "TIMEOUT"
    assert failed.latency is None and failed.power is None and failed.load_ms is None
    failed_id = store.append(failed)
    assert store.record(failed_id) == failed
    assert store.query().iloc[-1]["error_kind"] == "TIMEOUT"


def test_store_columns_are_the_fields_of_the_measurement_types(tmp_path):
    """One source: every field of Measurement and its parts is a column (renamed only where a
    v1 store already named it), nothing else is; the v1 columns keep their names."""
    expected = []
    for kind in (Measurement, *SECTIONS.values()):
        for f in fields(kind):
            if f.name in SECTIONS or f.metadata.get("column", f.name) is None:
                continue
            expected.append(f.metadata.get("column", f.name))
    assert [c.name for c in COLUMNS] == expected
    m = Measurement.from_proto(_result(), INFO)
    assert list(m.to_row()) == expected
    ResultsStore(tmp_path / "r.db")
    assert set(_stored_columns(tmp_path / "r.db")) == {"id", *FIXED, *expected}
    assert set(V1_COLUMNS) <= set(expected), set(V1_COLUMNS) - set(expected)
    # Host options mirror the wire message field for field (to_proto/from_proto are generated).
    assert [f.name for f in fields(BenchmarkOptions)] == [
        f.name for f in pb.BenchmarkOptions.DESCRIPTOR.fields]
    options = BenchmarkOptions(threads=3, cooldown_s=2, cpu_affinity=[0, 2])
    assert BenchmarkOptions.from_proto(options.to_proto()) == options
    assert options.cpu_affinity == (0, 2) and options.cooldown_s == 2.0


def test_an_old_schema_database_opens_gains_the_new_columns_and_keeps_its_rows(tmp_path):
    """A v1 store (36 hand-listed columns, flat JSON record with load time beside the latency,
    thermal as a dict) is migrated by ALTER TABLE on open; its rows read back."""
    path = tmp_path / "old.db"
    old_record = {
        "ok": True, "error_kind": "NONE", "error_message": "", "device_id": "old-dev",
        "device_hostname": "old", "device_arch": "x86_64", "model_sha256": "cd" * 32,
        "model_name": "old.onnx", "runtime": "onnx", "runtime_version": "1.20",
        "threads": 1, "accelerator": "cpu",
        "options": {"runtime": "", "threads": 1, "warmup_runs": 5, "warmup_min_seconds": 0.2,
                    "min_runs": 20, "min_seconds": 1.0, "max_runs": 0,
                    "timeout_seconds": 300.0, "power_sensor": "", "idle_seconds": 0.5,
                    "accelerator": "", "find_tflm_arena": False, "tflm_arena_bytes": 0,
                    "keep_samples": 10000},
        "latency": {"n": 2, "mean_ms": 2.0, "std_ms": 0.0, "cv": 0.0, "min_ms": 2.0,
                    "p50_ms": 2.0, "p90_ms": 2.0, "p95_ms": 2.0, "p99_ms": 2.0,
                    "max_ms": 2.0, "samples_ms": [2.0, 2.0]},
        "memory": {"peak_rss_mb": 1.0, "baseline_rss_mb": 50.0, "model_size_bytes": 10,
                   "tflm_arena_bytes": None},
        "power": None, "load_ms": 5.0, "first_inference_ms": 2.5, "timed_window_s": 1.0,
        "wall_s": 1.9, "warnings": [], "thermal": {"throttled": False,
                                                   "temperature_c_before": 40.0},
        "timestamp": 1_600_000_000.0, "toolkit_version": "0.0.9", "protocol_version": 1,
        "agent_version": "0.0.9", "requested_options": None,
    }  # fmt: skip
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE measurements (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id "
                   f"TEXT, options_json TEXT, record_json TEXT, extra_json TEXT, "
                   f"{', '.join(V1_COLUMNS)})")
        row = {c: old_record.get(c) for c in V1_COLUMNS} | {
            "ok": 1, "error_kind": None, "warnings": None, "n": 2, "p50_ms": 2.0}
        db.execute(f"INSERT INTO measurements (run_id, record_json, {', '.join(row)}) "
                   f"VALUES (?, ?, {', '.join('?' * len(row))})",
                   ["old-run", json.dumps(old_record), *row.values()])
        db.execute("PRAGMA user_version = 1")
        db.commit()

    store = ResultsStore(path)
    assert set(_stored_columns(path)) >= {c.name for c in COLUMNS}
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    frame = store.query(run_id="old-run")
    assert len(frame) == 1 and frame.iloc[0]["p50_ms"] == 2.0
    assert frame.iloc[0]["governor"] is None  # a column the old row never had
    old = store.record(int(frame.iloc[0]["id"]))
    assert old.ok and old.device_id == "old-dev" and old.latency.load_ms == 5.0
    assert old.thermal.temperature_c_before == 40.0 and old.provenance.affinity == ()
    new_id = store.append(Measurement.from_proto(_result(), INFO))
    assert store.record(new_id).provenance.governor == "performance"
    ResultsStore(path)  # a second open finds nothing to add


def test_a_database_from_a_newer_edgeloop_is_refused_naming_both_versions(tmp_path):
    path = tmp_path / "newer.db"
    ResultsStore(path)
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        db.commit()
    with pytest.raises(ResultsStoreError) as caught:
        ResultsStore(path)
    message = str(caught.value)
    assert f"v{SCHEMA_VERSION + 1}" in message and f"v{SCHEMA_VERSION}" in message
    assert str(path) in message and isinstance(caught.value, RuntimeError)


# ---------------------------------------------------------------- option precedence

PROFILE = DeviceProfile.from_mapping(
    {"name": "board", "address": "127.0.0.1:1", "threads": 4, "power_sensor": "rapl",
     "benchmark": {"cooldown_s": 5, "cpu_affinity": [2, 3], "min_runs": 50}}
)  # fmt: skip
EXPLICIT = BenchmarkOptions(threads=2, min_runs=10, power_sensor="none")
# flag beats profile (threads, min_runs, power_sensor); profile beats default (cooldown_s,
# cpu_affinity); neither: default (0, filled by the agent).
WANTED = BenchmarkOptions(threads=2, min_runs=10, power_sensor="none", cooldown_s=5,
                          cpu_affinity=(2, 3))


def test_precedence_is_flag_then_profile_then_default():
    assert resolve_options(EXPLICIT, PROFILE) == WANTED
    assert resolve_options(None, PROFILE) == BenchmarkOptions(
        threads=4, power_sensor="rapl", min_runs=50, cooldown_s=5, cpu_affinity=(2, 3))
    assert resolve_options(EXPLICIT, None) == EXPLICIT
    plain = DeviceProfile(name="plain", address="127.0.0.1:1")
    assert resolve_options(None, plain) == BenchmarkOptions()  # all agent defaults
    with pytest.raises(ConfigError, match="benchmark.threads"):
        DeviceProfile.from_mapping({"name": "x", "address": "h:1", "threads": 2,
                                    "benchmark": {"threads": 3}}, source="x.yaml")
    with pytest.raises(ConfigError, match=r"x.yaml: benchmark.cooldown_s: expected"):
        DeviceProfile.from_mapping({"name": "x", "address": "h:1",
                                    "benchmark": {"cooldown_s": -1}}, source="x.yaml")


def test_profile_tune_and_validate_send_the_same_options(agent, tmp_path):
    """Each command's path goes through resolve_options: the same explicit options on the
    same profile reach a real agent as the same options (the client keeps what it sent as
    `requested_options`), and the agent applies them alike."""
    import toolkit.profiling as profiling
    from tests.faults.agent_helpers import onnx_model
    from toolkit.tune.measure import Measurer
    from toolkit.validate import gate

    profile = DeviceProfile.from_mapping(
        {"name": "board", "address": agent.address, "threads": 1, "power_sensor": "rapl",
         "benchmark": {"cooldown_s": 0.1, "cpu_affinity": [0], "min_runs": 50}}
    )  # fmt: skip
    explicit = BenchmarkOptions(threads=2, min_runs=10, power_sensor="none", min_seconds=0.05,
                                warmup_min_seconds=0.01)
    wanted = BenchmarkOptions(threads=2, min_runs=10, power_sensor="none", min_seconds=0.05,
                              warmup_min_seconds=0.01, cooldown_s=0.1, cpu_affinity=(0,))
    model = tmp_path / "m.onnx"
    model.write_bytes(onnx_model(16))

    profiled = profiling.profile_model(model, device=profile, options=explicit, store=False)

    device = SimpleNamespace(profile=profile)
    measurer = Measurer([device], db=None, store=None, run_id="r", bench=explicit)
    tuned = measurer.options(device, threads=2)  # the candidate's threads are explicit

    run = gate._DeviceRun("board", ["benchmark"])
    prep = SimpleNamespace(sha256=agent.push(model), artifact=model, run_id="r", baseline=None)
    config = gate.GateConfig(options=explicit, store=False)
    validated = gate._benchmark_and_budgets(run, agent, profile, prep, config)

    assert profiled.ok and validated.ok, (profiled.error_message, validated.error_message)
    sent = [m.provenance.requested_options for m in (profiled, validated)]
    assert sent[0] == sent[1] == tuned == wanted
    assert profiled.provenance.options == validated.provenance.options  # as the agent ran them
    assert profiled.provenance.affinity == validated.provenance.affinity == (0,)


# ---------------------------------------------------------------- Infer error kinds


def _external_data_onnx(path: Path) -> Path:
    """A valid ONNX graph whose weight lives in another file: the agent must refuse it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((1, 4), np.float32), "W")
    onnx.external_data_helper.set_external_data(weight, location="../index.json", length=16)
    weight.data_location = TensorProto.EXTERNAL
    weight.ClearField("raw_data")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "W"], ["y"])], "add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [weight],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def test_infer_of_a_model_that_could_read_files_raises_the_unsafe_kind(agent, tmp_path):
    path = _external_data_onnx(tmp_path / "external.onnx")
    with pytest.raises(UnsafeModelError) as caught:
        agent.infer(path, [np.zeros((1, 4), np.float32)])
    assert caught.value.kind is ErrorKind.UNSAFE_MODEL
    assert isinstance(caught.value, AgentError) and isinstance(caught.value, RuntimeError)


def test_infer_of_an_unloadable_model_raises_the_load_kind(agent, tmp_path):
    path = tmp_path / "garbage.tflite"
    path.write_bytes(b"\x00\x00\x00\x00TFL3" + bytes(range(256)) * 8)
    with pytest.raises(AgentError) as caught:
        agent.infer(path, [np.zeros((1, 4), np.float32)])
    assert caught.value.kind in (ErrorKind.LOAD_FAILED, ErrorKind.CRASHED), caught.value


def test_infer_with_a_runtime_the_agent_lacks_raises_the_runtime_kind(agent, tmp_path):
    path = _external_data_onnx(tmp_path / "any.onnx")
    with pytest.raises(RuntimeUnavailableError) as caught:
        agent.infer(path, [np.zeros((1, 4), np.float32)], runtime="no-such-runtime")
    assert caught.value.kind is ErrorKind.UNKNOWN_RUNTIME

"""Out-of-range benchmark options are refused by the agent itself, naming the field and range.

The host validates too (another test); these requests go around it, straight to the agent,
so each fails if the agent-side check in device_agent.measure.options is removed.
"""

from __future__ import annotations

import math

import grpc
import pytest

from device_agent.measure.options import MAX_KEEP_SAMPLES, RANGES, validate, with_defaults
from device_agent.measure.runner import benchmark_in_child
from device_agent.protocol import edgeloop_pb2 as pb

BAD = [
    ("timeout_seconds", math.nan, "expected a finite number in [0, 86400], got nan"),
    ("min_seconds", math.inf, "expected a finite number in [0, 86400], got inf"),
    ("warmup_min_seconds", -1.0, "got -1"),
    ("keep_samples", 4_000_000, f"expected an integer in [0, {MAX_KEEP_SAMPLES}], got 4000000"),
    ("threads", -2, "expected an integer in [0, 1024], got -2"),
    ("idle_seconds", math.nan, "got nan"),
]


@pytest.mark.parametrize(("field", "value", "says"), BAD)
def test_validate_names_the_field_and_its_range(field, value, says):
    problem = validate(with_defaults(pb.BenchmarkOptions(**{field: value})))
    assert problem.startswith(f"options.{field}:") and says in problem, problem


def _repeated(field) -> bool:
    return field.is_repeated  # cpu_affinity: a list, checked on its own


def test_every_numeric_option_has_one_range():
    numeric = {
        f.name for f in pb.BenchmarkOptions.DESCRIPTOR.fields
        if f.type in (f.TYPE_INT32, f.TYPE_INT64, f.TYPE_DOUBLE) and not _repeated(f)
    }
    assert numeric == set(RANGES)


@pytest.mark.parametrize(("field", "value", "says"), BAD[:2])
def test_benchmark_in_child_refuses_before_starting_a_child(field, value, says, model_files):
    result = benchmark_in_child(str(model_files.tflite), "tflite",
                                pb.BenchmarkOptions(**{field: value}))
    assert result.error_kind == pb.ERROR_KIND_BAD_REQUEST and says in result.error_message


@pytest.mark.parametrize(("field", "value", "says"), BAD)
def test_the_agent_refuses_bad_options_with_invalid_argument(agent, model_files, field, value,
                                                             says):
    """A raw gRPC request (no host-side check): INVALID_ARGUMENT naming the field."""
    sha = agent.push(model_files.tflite)
    request = pb.BenchmarkRequest(sha256=sha, options=pb.BenchmarkOptions(**{field: value}))
    with pytest.raises(grpc.RpcError) as info:
        for _ in agent._stub.Benchmark(request, timeout=60, metadata=agent._metadata):
            pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"options.{field}" in info.value.details() and says in info.value.details()
    assert agent.health().queued_benchmarks == 0

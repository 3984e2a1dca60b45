"""Measurement types on the host: units in the field names, built from the agent's record."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional

from google.protobuf import json_format

from device_agent.protocol import edgeloop_pb2 as pb
from toolkit.errors import ConfigError


@dataclass(frozen=True)
class BenchmarkOptions:
    """How to benchmark. Zero / empty means the agent's default (stated per field).

    Attributes:
        runtime: "tflite", "onnx", "torch", "tflm"; empty picks from the model format.
        threads: runtime threads; 0 = runtime default.
        warmup_runs: warm-up inferences (default 5), and at least `warmup_min_seconds` (0.2 s).
        min_runs: timed inferences, at least (default 20), and at least `min_seconds` (1.0 s).
        max_runs: cap on timed inferences (default: none; the timeout bounds the run).
        timeout_seconds: the whole benchmark child, load included (default 300 s).
        power_sensor: "" = first available, "none" = no power, or a sensor name.
        idle_seconds: idle power baseline window (default 0.5 s), only with a sensor.
        accelerator: torch: "cpu" or "cuda"; empty = cuda when present.
        find_tflm_arena: tflm: search the smallest arena (default when no arena is given).
        tflm_arena_bytes: tflm: arena to use.
        keep_samples: raw latency samples returned (default and cap: the agent's); it changes
            what comes back, not what is measured, so it is not part of `key()`.

    Raises:
        ConfigError: on construction, when a value is non-finite, negative or out of range;
            the message names the field and the allowed range. The ranges are the agent's
            (`device_agent.measure.options`), so the host refuses before it pushes anything
            exactly what the agent would refuse.
    """

    runtime: str = ""
    threads: int = 0
    warmup_runs: int = 0
    warmup_min_seconds: float = 0.0
    min_runs: int = 0
    min_seconds: float = 0.0
    max_runs: int = 0
    timeout_seconds: float = 0.0
    power_sensor: str = ""
    idle_seconds: float = 0.0
    accelerator: str = ""
    find_tflm_arena: bool = False
    tflm_arena_bytes: int = 0
    keep_samples: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raises ConfigError naming the first unusable field and its allowed range."""
        from device_agent.measure.options import validate, with_defaults

        try:
            proto = self.to_proto()
        except (TypeError, ValueError) as exc:  # a str for a number, a float for an int ...
            raise ConfigError(f"benchmark options: {exc}") from None
        problem = validate(with_defaults(proto))
        if problem:
            raise ConfigError(f"benchmark {problem}")

    def key(self) -> str:
        """A stable text form, used to find earlier measurements with the same options."""
        values = asdict(self)
        del values["keep_samples"]  # how many raw samples come back, not how they were measured
        return json.dumps(values, sort_keys=True)

    def to_proto(self) -> pb.BenchmarkOptions:
        return pb.BenchmarkOptions(**asdict(self))

    @classmethod
    def from_proto(cls, msg: pb.BenchmarkOptions) -> BenchmarkOptions:
        return cls(**{f.name: getattr(msg, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class Latency:
    """Latency of the timed runs, in milliseconds; `samples_ms` are the raw runs kept."""

    n: int
    mean_ms: float
    std_ms: float
    cv: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    samples_ms: tuple[float, ...] = ()

    @classmethod
    def from_proto(cls, msg: pb.LatencyStats) -> Latency:
        values = {f.name: getattr(msg, f.name) for f in fields(cls) if f.name != "samples_ms"}
        return cls(samples_ms=tuple(msg.samples_ms), **values)


@dataclass(frozen=True)
class Memory:
    """Peak RSS above the pre-load baseline (MB), model file size, TFLM arena when searched."""

    peak_rss_mb: float
    baseline_rss_mb: float
    model_size_bytes: int
    tflm_arena_bytes: Optional[int] = None


@dataclass(frozen=True)
class Power:
    """Power during the timed window; present only when a real sensor was read."""

    sensor: str
    rate_hz: float
    samples: int
    mean_w: float
    idle_w: float
    energy_per_inference_mj: float
    method: str = "samples"


@dataclass(frozen=True)
class Measurement:
    """One benchmark of one model on one device, with its provenance.

    `ok` is False when the device reported a failure; then `error_kind` (an ErrorKind name
    without the prefix, e.g. "TIMEOUT", "CRASHED") and `error_message` say what happened and
    the figures are None. A failure is a result to record and rank, not an exception.
    """

    ok: bool
    error_kind: str
    error_message: str
    device_id: str
    device_hostname: str
    device_arch: str
    model_sha256: str
    model_name: str
    runtime: str
    runtime_version: str
    threads: int
    accelerator: str
    options: BenchmarkOptions
    latency: Optional[Latency]
    memory: Optional[Memory]
    power: Optional[Power]
    load_ms: Optional[float]
    first_inference_ms: Optional[float]
    timed_window_s: Optional[float]
    wall_s: float
    warnings: tuple[str, ...] = ()
    thermal: dict[str, Any] = field(default_factory=dict)
    timestamp: float = field(default_factory=time.time)
    toolkit_version: str = ""
    protocol_version: int = 0
    agent_version: str = ""
    requested_options: Optional[BenchmarkOptions] = None  # as the host asked (cache key)

    @classmethod
    def from_proto(
        cls,
        result: pb.BenchmarkResult,
        info: Any,
        model_name: str = "",
        requested: Optional[BenchmarkOptions] = None,
    ) -> Measurement:
        """Builds a measurement from the agent's BenchmarkResult and the device's info."""
        from device_agent import __version__

        ok = result.error_kind == pb.ERROR_KIND_NONE
        kind = pb.ErrorKind.Name(result.error_kind).removeprefix("ERROR_KIND_")
        memory = None
        if ok:
            m = result.memory
            memory = Memory(
                peak_rss_mb=m.peak_rss_mb,
                baseline_rss_mb=m.baseline_rss_mb,
                model_size_bytes=m.model_size_bytes,
                tflm_arena_bytes=m.tflm_arena_bytes if m.HasField("tflm_arena_bytes") else None,
            )
        power = None
        if ok and result.HasField("power"):
            p = result.power
            power = Power(
                p.sensor,
                p.rate_hz,
                p.samples,
                p.mean_w,
                p.idle_w,
                p.energy_per_inference_mj,
                p.method or "samples",
            )
        thermal = json_format.MessageToDict(result.thermal, preserving_proto_field_name=True)
        return cls(
            ok=ok,
            error_kind=kind,
            error_message=result.error_message,
            device_id=info.device_id,
            device_hostname=info.hostname,
            device_arch=info.arch,
            model_sha256=result.sha256,
            model_name=model_name,
            runtime=result.runtime or result.options.runtime,
            runtime_version=result.runtime_version,
            threads=result.threads,
            accelerator=result.accelerator,
            options=BenchmarkOptions.from_proto(result.options),
            latency=Latency.from_proto(result.latency) if ok else None,
            memory=memory,
            power=power,
            load_ms=result.load_ms if ok else None,
            first_inference_ms=result.first_inference_ms if ok else None,
            timed_window_s=result.timed_window_s if ok else None,
            wall_s=result.wall_s,
            warnings=tuple(result.warnings),
            thermal=thermal,
            timestamp=result.started_unix or time.time(),
            toolkit_version=__version__,
            protocol_version=info.protocol_version,
            agent_version=info.agent_version,
            requested_options=requested,
        )

    def to_row(self) -> dict[str, Any]:
        """A flat row for the results store and tables (units in the column names)."""
        lat, mem, pw = self.latency, self.memory, self.power
        return {
            "timestamp": self.timestamp,
            "ok": self.ok,
            "error_kind": None if self.ok else self.error_kind,
            "error_message": self.error_message or None,
            "device_id": self.device_id,
            "device_hostname": self.device_hostname,
            "device_arch": self.device_arch,
            "model_sha256": self.model_sha256,
            "model_name": self.model_name,
            "runtime": self.runtime,
            "runtime_version": self.runtime_version,
            "threads": self.threads,
            "accelerator": self.accelerator,
            "n": lat.n if lat else None,
            "mean_ms": lat.mean_ms if lat else None,
            "std_ms": lat.std_ms if lat else None,
            "cv": lat.cv if lat else None,
            "min_ms": lat.min_ms if lat else None,
            "p50_ms": lat.p50_ms if lat else None,
            "p90_ms": lat.p90_ms if lat else None,
            "p95_ms": lat.p95_ms if lat else None,
            "p99_ms": lat.p99_ms if lat else None,
            "max_ms": lat.max_ms if lat else None,
            "load_ms": self.load_ms,
            "first_inference_ms": self.first_inference_ms,
            "peak_rss_mb": mem.peak_rss_mb if mem else None,
            "model_size_bytes": mem.model_size_bytes if mem else None,
            "tflm_arena_bytes": mem.tflm_arena_bytes if mem else None,
            "power_sensor": pw.sensor if pw else None,
            "mean_w": pw.mean_w if pw else None,
            "idle_w": pw.idle_w if pw else None,
            "energy_mj": pw.energy_per_inference_mj if pw else None,
            "warnings": "; ".join(self.warnings) or None,
            "toolkit_version": self.toolkit_version,
            "agent_version": self.agent_version,
            "protocol_version": self.protocol_version,
        }

    def to_json(self) -> dict[str, Any]:
        """Everything, nested, JSON-ready (raw samples included)."""
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Measurement:
        raw = dict(raw)
        raw["options"] = BenchmarkOptions(**raw["options"])
        if raw.get("requested_options"):
            raw["requested_options"] = BenchmarkOptions(**raw["requested_options"])
        if raw.get("latency"):
            lat = dict(raw["latency"])
            lat["samples_ms"] = tuple(lat.get("samples_ms", ()))
            raw["latency"] = Latency(**lat)
        raw["memory"] = Memory(**raw["memory"]) if raw.get("memory") else None
        raw["power"] = Power(**raw["power"]) if raw.get("power") else None
        raw["warnings"] = tuple(raw.get("warnings", ()))
        return cls(**raw)

"""Measurement types on the host: units in the field names, each built once from the agent's
record.

A `Measurement` is its outcome (`ok`, `error_kind`, `error_message`, `warnings`, `wall_s`)
and five parts, each a frozen dataclass with one constructor from the proto:

* `Provenance` — who measured what, how, when: device, runtime, model, options, versions,
  and the device's state while it ran (OS, kernel, CPU model, Python, governor, frequency,
  affinity);
* `Latency` — the timed runs' statistics (ms), load and first-inference time, raw samples;
* `Memory` — peak RSS above baseline, file size, TFLM arena;
* `Power` — present only when a real sensor was read;
* `Thermal` — frequency and temperature around the timed window, throttling, cooldown.

These types are the one source of the results-store columns: `COLUMNS` is generated from
their fields (a field's `metadata` may rename its column or keep it out of the flat row), and
`Measurement.to_row()` reads every column through that list.
"""

from __future__ import annotations

import json
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Optional

from device_agent.protocol import edgeloop_pb2 as pb
from toolkit.errors import ConfigError, ErrorKind

NOT_A_COLUMN = {"column": None}
"""Field metadata: the field is kept in the JSON record only (raw samples, nested options)."""


def _column(name: str) -> dict[str, str]:
    """Field metadata: the field's column is called `name` (a name older stores already use)."""
    return {"column": name}


def _optional(msg: Any, name: str) -> Optional[Any]:
    """A proto3 `optional` scalar: its value, or None when the agent did not set it."""
    return getattr(msg, name) if msg.HasField(name) else None


@dataclass(frozen=True)
class BenchmarkOptions:
    """How to benchmark. Zero / empty means "the agent's default": the agent fills every unset
    field from `device_agent.measure.options.DEFAULTS` (the one place defaults are stated) and
    checks each against `RANGES` there.

    Attributes:
        runtime: "tflite", "onnx", "torch", "tflm"; empty picks from the model format.
        threads: runtime threads; 0 = runtime default.
        warmup_runs: warm-up inferences, and at least `warmup_min_seconds` seconds of them.
        min_runs: timed inferences, at least, and at least `min_seconds` seconds of them.
        max_runs: cap on timed inferences (0: none; the timeout bounds the run).
        timeout_seconds: the whole benchmark child, load included.
        power_sensor: "" = the sensor that follows the accelerator, "none" = no power, or a
            sensor name.
        idle_seconds: idle power baseline window, only with a sensor.
        accelerator: torch: "cpu" or "cuda"; empty = cuda when present.
        find_tflm_arena: tflm: search the smallest arena (default when no arena is given).
        tflm_arena_bytes: tflm: arena to use.
        keep_samples: raw latency samples returned; it changes what comes back, not what is
            measured, so it is not part of `key()`.
        cooldown_s: idle this long before the benchmark starts (0: no cooldown).
        max_start_temp_c: wait until the device is at or below this temperature (0: no wait).
        start_temp_timeout_s: give up waiting for `max_start_temp_c` after this long.
        cpu_affinity: pin the benchmark child to these CPU numbers (empty: no pinning).
        per_op: also profile per operator after the timed window (`Measurement.ops`).
        inputs_sha256: sha256 of a pushed `.npz` of real input samples the timed loop cycles
            through (`profile --inputs`); empty: random inputs.

    Raises:
        ConfigError: on construction, when a value is non-finite, negative or out of range;
            the message names the field and the allowed range. The ranges are the agent's,
            so the host refuses before it pushes anything exactly what the agent would refuse.
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
    cooldown_s: float = 0.0
    max_start_temp_c: float = 0.0
    start_temp_timeout_s: float = 0.0
    cpu_affinity: tuple[int, ...] = ()
    per_op: bool = False
    inputs_sha256: str = ""

    def __post_init__(self) -> None:
        for f in fields(self):  # 2 from YAML is 2.0: one key, one proto value
            value = getattr(self, f.name)
            if f.type == "float" and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value))
        if not isinstance(self.cpu_affinity, tuple):  # a list from YAML or JSON
            try:
                object.__setattr__(self, "cpu_affinity", tuple(self.cpu_affinity))
            except TypeError:
                raise ConfigError(
                    "benchmark options.cpu_affinity: expected a list of CPU numbers, "
                    f"got {self.cpu_affinity!r}"
                ) from None
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

    def set_fields(self) -> dict[str, Any]:
        """The fields that differ from "default" (zero / empty), by name."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) != f.default
        }

    def key(self) -> str:
        """A stable text form, used to find earlier measurements with the same options.

        Only fields set away from their default take part, so a field added later leaves the
        keys of earlier options unchanged.
        """
        values = self.set_fields()
        values.pop("keep_samples", None)  # how many raw samples come back, not how measured
        return json.dumps(values, sort_keys=True)

    def to_proto(self) -> pb.BenchmarkOptions:
        return pb.BenchmarkOptions(**{f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def from_proto(cls, msg: pb.BenchmarkOptions) -> BenchmarkOptions:
        return cls(
            **{  # a repeated field (a tuple here) comes as a list-like container
                f.name: tuple(getattr(msg, f.name))
                if isinstance(f.default, tuple)
                else getattr(msg, f.name)
                for f in fields(cls)
            }
        )

    @classmethod
    def from_mapping(cls, raw: dict[str, Any]) -> BenchmarkOptions:
        """From JSON / YAML (`asdict` output); a key this version does not know is refused."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(
                f"benchmark options.{unknown[0]}: unknown option; expected one of {sorted(known)}"
            )
        try:
            return cls(**raw)
        except TypeError as exc:
            raise ConfigError(f"benchmark options: {exc}") from None


@dataclass(frozen=True)
class Provenance:
    """Where, what and how a measurement was taken; stamped on every stored row.

    The device facts after `protocol_version` come from the agent's `DeviceState` for this
    run (empty / None when the agent did not report them).
    """

    device_id: str
    device_hostname: str
    device_arch: str
    model_sha256: str
    model_name: str
    runtime: str
    runtime_version: str
    threads: int
    accelerator: str
    options: BenchmarkOptions = field(metadata=NOT_A_COLUMN)  # as applied; options_json
    requested_options: Optional[BenchmarkOptions] = field(
        default=None, metadata=NOT_A_COLUMN
    )  # as the host asked (the store's cache key)
    timestamp: float = field(default_factory=time.time)  # when the run started, Unix s
    toolkit_version: str = ""
    agent_version: str = ""
    protocol_version: int = 0
    os: str = ""
    kernel: str = ""
    cpu_model: str = ""
    python_version: str = ""
    governor: str = ""
    cpu_freq_mhz: Optional[float] = None  # when the timed window began
    affinity: tuple[int, ...] = ()  # CPUs the benchmark child could run on
    real_inputs: bool = False  # the timed loop cycled through real samples (profile --inputs)
    inputs_sha256: str = ""  # sha256 of the samples file (.npz), when real_inputs

    @classmethod
    def from_proto(
        cls,
        result: pb.BenchmarkResult,
        info: Any,
        model_name: str = "",
        requested: Optional[BenchmarkOptions] = None,
    ) -> Provenance:
        """From the agent's BenchmarkResult and the device's info (`DeviceInfo`)."""
        from device_agent import __version__

        state = result.device_state
        return cls(
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
            requested_options=requested,
            timestamp=result.started_unix or time.time(),
            toolkit_version=__version__,
            agent_version=info.agent_version,
            protocol_version=info.protocol_version,
            os=state.os,
            kernel=state.kernel,
            cpu_model=state.cpu_model,
            python_version=state.python_version,
            governor=state.governor,
            cpu_freq_mhz=_optional(state, "cpu_freq_mhz"),
            affinity=tuple(state.affinity),
            real_inputs=result.input_batches > 0,  # what the agent did, not what was asked
            inputs_sha256=result.options.inputs_sha256 if result.input_batches > 0 else "",
        )


@dataclass(frozen=True)
class Latency:
    """The timed runs (ms), the model's load and first inference, and the raw samples kept."""

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
    load_ms: Optional[float] = None
    first_inference_ms: Optional[float] = None
    timed_window_s: Optional[float] = None  # duration of the timed runs
    samples_ms: tuple[float, ...] = field(default=(), metadata=NOT_A_COLUMN)

    @classmethod
    def from_proto(cls, result: pb.BenchmarkResult) -> Latency:
        """From a successful BenchmarkResult (its `latency` and its load / timing fields)."""
        stats = result.latency
        values = {
            f.name: getattr(stats, f.name)
            for f in fields(cls)
            if f.name in stats.DESCRIPTOR.fields_by_name and f.name != "samples_ms"
        }
        return cls(
            **values,
            load_ms=result.load_ms,
            first_inference_ms=result.first_inference_ms,
            timed_window_s=result.timed_window_s,
            samples_ms=tuple(stats.samples_ms),
        )


@dataclass(frozen=True)
class Memory:
    """Peak RSS above the pre-load baseline (MB), model file size, TFLM arena when searched."""

    peak_rss_mb: float
    baseline_rss_mb: float
    model_size_bytes: int
    tflm_arena_bytes: Optional[int] = None

    @classmethod
    def from_proto(cls, msg: pb.MemoryStats) -> Memory:
        return cls(
            peak_rss_mb=msg.peak_rss_mb,
            baseline_rss_mb=msg.baseline_rss_mb,
            model_size_bytes=msg.model_size_bytes,
            tflm_arena_bytes=_optional(msg, "tflm_arena_bytes"),
        )


@dataclass(frozen=True)
class Power:
    """Power during the timed window; present only when a real sensor was read.

    Energy per inference = (mean_w - idle_w) × timed window / runs, in mJ.
    """

    sensor: str = field(metadata=_column("power_sensor"))
    rate_hz: float = field(metadata=_column("power_rate_hz"))
    samples: int = field(metadata=_column("power_samples"))
    mean_w: float
    idle_w: float
    energy_per_inference_mj: float = field(metadata=_column("energy_mj"))
    method: str = field(default="samples", metadata=_column("power_method"))

    @classmethod
    def from_proto(cls, msg: pb.PowerStats) -> Power:
        return cls(
            sensor=msg.sensor,
            rate_hz=msg.rate_hz,
            samples=msg.samples,
            mean_w=msg.mean_w,
            idle_w=msg.idle_w,
            energy_per_inference_mj=msg.energy_per_inference_mj,
            method=msg.method or "samples",
        )


@dataclass(frozen=True)
class Thermal:
    """CPU frequency (MHz) and temperature (°C) right before and after the timed window,
    whether the device throttled or warmed past the agent's flag threshold, and the time
    spent cooling down before the run. None where the device could not be read."""

    cpu_freq_mhz_before: Optional[float] = None
    cpu_freq_mhz_after: Optional[float] = None
    temperature_c_before: Optional[float] = None
    temperature_c_after: Optional[float] = None
    throttled: bool = False
    temperature_rise_c: Optional[float] = None
    temperature_rose: bool = False
    cooldown_waited_s: float = 0.0

    @classmethod
    def from_proto(cls, msg: pb.ThermalStats) -> Thermal:
        return cls(
            **{
                f.name: _optional(msg, f.name)
                if msg.DESCRIPTOR.fields_by_name[f.name].has_presence
                else getattr(msg, f.name)
                for f in fields(cls)
            }
        )


@dataclass(frozen=True)
class OpProfile:
    """One operator's share of an inference, from the runtime's own profiler (outside the
    timed window). `mean_ms` is 0 where the source has no times (see `Measurement.ops_note`)."""

    name: str
    op_type: str
    calls: int
    mean_ms: float
    share: float

    @classmethod
    def from_proto(cls, msg: pb.OpProfile) -> OpProfile:
        return cls(msg.name, msg.op_type, msg.calls, msg.mean_ms, msg.share)


SECTIONS: dict[str, type] = {
    "provenance": Provenance,
    "latency": Latency,
    "memory": Memory,
    "power": Power,
    "thermal": Thermal,
}
"""The parts of a Measurement, by attribute name; each field of each part can be read on the
measurement itself too (`m.p50_ms`, `m.device_id`; None when the part is absent)."""


@dataclass(frozen=True)
class Measurement:
    """One benchmark of one model on one device, with its provenance.

    `ok` is False when the device reported a failure; then `error_kind` (an ErrorKind member,
    equal to its name, e.g. "TIMEOUT", "CRASHED") and `error_message` say what happened and
    latency, memory and power are None. A failure is a result to record and rank, not an
    exception.
    """

    ok: bool
    error_kind: ErrorKind
    error_message: str
    provenance: Provenance
    latency: Optional[Latency]
    memory: Optional[Memory]
    power: Optional[Power]
    thermal: Thermal = field(default_factory=Thermal)
    wall_s: float = 0.0  # child process wall time, spawn to exit
    warnings: tuple[str, ...] = ()
    ops: tuple[OpProfile, ...] = field(default=(), metadata=NOT_A_COLUMN)  # with --per-op
    ops_source: str = field(default="", metadata=NOT_A_COLUMN)  # e.g. "onnxruntime-profiler"
    ops_note: str = field(default="", metadata=NOT_A_COLUMN)  # what the source cannot tell
    # attached devices (a DUT over serial): the host's clock per inference, apart from the
    # device's own timer that `latency` holds
    host_round_trip_p50_ms: Optional[float] = None

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are not attributes: a field of one of the parts.
        section = _FIELD_SECTION.get(name)
        if section is None or name.startswith("_"):
            raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")
        part = self.__dict__.get(section)
        return None if part is None else getattr(part, name)

    @classmethod
    def from_proto(
        cls,
        result: pb.BenchmarkResult,
        info: Any,
        model_name: str = "",
        requested: Optional[BenchmarkOptions] = None,
    ) -> Measurement:
        """Builds a measurement from the agent's BenchmarkResult and the device's info."""
        ok = result.error_kind == pb.ERROR_KIND_NONE
        return cls(
            ok=ok,
            error_kind=ErrorKind.from_proto(result.error_kind),
            error_message=result.error_message,
            provenance=Provenance.from_proto(result, info, model_name, requested),
            latency=Latency.from_proto(result) if ok else None,
            memory=Memory.from_proto(result.memory) if ok else None,
            power=Power.from_proto(result.power) if ok and result.HasField("power") else None,
            thermal=Thermal.from_proto(result.thermal),
            wall_s=result.wall_s,
            warnings=tuple(result.warnings),
            ops=tuple(OpProfile.from_proto(op) for op in result.ops),
            ops_source=result.ops_source,
            ops_note=result.ops_note,
            host_round_trip_p50_ms=result.host_round_trip.p50_ms
            if result.HasField("host_round_trip")
            else None,
        )

    def to_row(self) -> dict[str, Any]:
        """A flat row for the results store and tables: one value per `COLUMNS` entry."""
        return {column.name: column.read(self) for column in COLUMNS}

    def to_json(self) -> dict[str, Any]:
        """Everything, JSON-ready (raw samples included): the provenance's fields at the top
        level beside the outcome, the other parts nested under their names."""
        raw = _plain(self)
        raw.update(raw.pop("provenance"))
        return raw

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Measurement:
        """From `to_json()` output, including records written before the split (load and
        timing at the top level, thermal as the proto's dict)."""
        raw = dict(raw)
        prov = {f.name: raw.pop(f.name) for f in fields(Provenance) if f.name in raw}
        prov["options"] = BenchmarkOptions.from_mapping(prov["options"])
        if prov.get("requested_options"):
            prov["requested_options"] = BenchmarkOptions.from_mapping(prov["requested_options"])
        if "affinity" in prov:
            prov["affinity"] = tuple(prov["affinity"])
        moved = {k: raw.pop(k) for k in ("load_ms", "first_inference_ms", "timed_window_s")
                 if k in raw}  # older records: beside the latency, not in it
        latency = None
        if raw.get("latency"):
            lat = {**moved, **raw["latency"]}
            lat["samples_ms"] = tuple(lat.get("samples_ms", ()))
            latency = Latency(**lat)
        return cls(
            ok=raw["ok"],
            error_kind=ErrorKind(raw["error_kind"]),
            error_message=raw["error_message"],
            provenance=Provenance(**prov),
            latency=latency,
            memory=Memory(**raw["memory"]) if raw.get("memory") else None,
            power=Power(**raw["power"]) if raw.get("power") else None,
            thermal=Thermal(**(raw.get("thermal") or {})),
            wall_s=raw.get("wall_s", 0.0),
            warnings=tuple(raw.get("warnings", ())),
            ops=tuple(OpProfile(**op) for op in raw.get("ops", ())),
            ops_source=raw.get("ops_source", ""),
            ops_note=raw.get("ops_note", ""),
            host_round_trip_p50_ms=raw.get("host_round_trip_p50_ms"),
        )


def _plain(value: Any) -> Any:
    """`dataclasses.asdict` without its deep copy: tuples of scalars (10,000 raw samples) are
    immutable and kept as they are, which makes a record ~10× cheaper to build."""
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple) and value and hasattr(value[0], "__dataclass_fields__"):
        return tuple(_plain(v) for v in value)
    return value


# -- the flat row, generated from the types above --------------------------------------------


@dataclass(frozen=True)
class Column:
    """One results-store column: its name, SQL type, and how to read it from a Measurement."""

    name: str
    sql_type: str
    read: Callable[[Measurement], Any]
    boolean: bool = False  # stored as 0/1; read back as a boolean


_SQL_TYPES = {bool: "INTEGER", int: "INTEGER", float: "REAL", str: "TEXT"}


def _scalar_type(hint: Any) -> Any:
    """`Optional[float]` -> float, `tuple[int, ...]` -> tuple, `ErrorKind` -> str."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Union and len(args) == 1:
        return _scalar_type(args[0])
    if typing.get_origin(hint) is tuple:
        return tuple
    if isinstance(hint, type) and issubclass(hint, str):
        return str
    return hint


def _flat(value: Any) -> Any:
    """A value as SQLite stores it: "nothing" (ErrorKind.NONE, "", ()) as NULL, an ErrorKind
    as its name, CPU lists as "0,1", other tuples "; "-joined, the rest as is."""
    if value is ErrorKind.NONE or value == "" or value == ():
        return None
    if isinstance(value, ErrorKind):
        return value.value
    if isinstance(value, tuple):
        separator = "," if all(isinstance(v, int) for v in value) else "; "
        return separator.join(str(v) for v in value)
    return value


def _columns_of(kind: type, get: Callable[[Measurement], Any]) -> list[Column]:
    hints = typing.get_type_hints(kind, globalns=globals())
    columns = []
    for f in fields(kind):
        name = f.metadata.get("column", f.name)
        if name is None or f.name in SECTIONS:
            continue
        scalar = _scalar_type(hints[f.name])
        sql = _SQL_TYPES.get(scalar, "TEXT")

        def read(m: Measurement, attr: str = f.name) -> Any:
            part = get(m)
            return None if part is None else _flat(getattr(part, attr))

        columns.append(Column(name, sql, read, boolean=scalar is bool))
    return columns


def _build_columns() -> tuple[Column, ...]:
    columns = _columns_of(Measurement, lambda m: m)
    for attr, kind in SECTIONS.items():
        columns += _columns_of(kind, lambda m, a=attr: getattr(m, a))
    names = [c.name for c in columns]
    duplicated = {n for n in names if names.count(n) > 1}
    assert not duplicated, f"results-store columns named twice: {sorted(duplicated)}"
    return tuple(columns)


def _field_sections() -> dict[str, str]:
    table: dict[str, str] = {}
    for attr, kind in SECTIONS.items():
        for f in fields(kind):
            assert f.name not in table, f"field {f.name} in {table.get(f.name)} and {attr}"
            table[f.name] = attr
    return table


_FIELD_SECTION = _field_sections()
COLUMNS: tuple[Column, ...] = _build_columns()
"""The results store's flat columns, in order: the Measurement's own scalar fields, then each
part's fields (renamed by metadata where an older store already had a name)."""

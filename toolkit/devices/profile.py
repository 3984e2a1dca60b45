"""Device profiles: how to reach a device, what it runs, and its budgets (YAML → dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from toolkit.errors import ConfigError
from toolkit.measurement import BenchmarkOptions
from toolkit.paths import profile_dirs

TRANSPORTS = ("grpc", "ssh", "local", "serial")
TUNNELS = (None, "ssh")


@dataclass(frozen=True)
class Budgets:
    """Per-device limits a model must meet. None: no limit on that metric."""

    latency_p90_ms: Optional[float] = None
    memory_mb: Optional[float] = None
    energy_mj: Optional[float] = None
    size_kb: Optional[float] = None

    @classmethod
    def from_mapping(cls, raw: Any, where: str) -> Budgets:
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: budgets: expected a mapping, got {type(raw).__name__}")
        known = {f.name for f in fields(cls)}
        values = {}
        for key, value in raw.items():
            if key not in known:
                raise ConfigError(
                    f"{where}: budgets.{key}: unknown budget; expected one of {sorted(known)}"
                )
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(
                    f"{where}: budgets.{key}: expected a positive number, got {value!r}"
                )
            values[key] = float(value)
        return cls(**values)

    def items(self) -> list[tuple[str, float]]:
        """The budgets that are set, as (name, limit) pairs."""
        return [
            (f.name, getattr(self, f.name))
            for f in fields(self)
            if getattr(self, f.name) is not None
        ]


@dataclass(frozen=True)
class SshConfig:
    """How to reach a device over SSH."""

    host: str
    port: int = 22
    user: Optional[str] = None
    key_file: Optional[str] = None
    known_hosts: Optional[str] = None
    jump_host: Optional[str] = None  # "user@host:port"
    python: str = "python3"
    agent_dir: str = "~/.edgeloop-agent"
    agent_port: int = 50051


@dataclass(frozen=True)
class TlsConfig:
    """TLS settings for reaching an agent that listens beyond loopback."""

    ca_file: str
    cert_file: Optional[str] = None  # client certificate for mTLS
    key_file: Optional[str] = None
    token_env: Optional[str] = None  # environment variable holding a bearer token
    server_name: Optional[str] = None


@dataclass(frozen=True)
class SerialConfig:
    """A microcontroller on a serial port of this host (MLPerf Tiny DUT protocol).

    Timeouts in seconds: `reply_timeout_s` for each command but infer, `infer_timeout_s` for
    one infer reply, `settle_s` of quiet before the first command (~2 for boards that reset
    when the port opens).
    """

    port: str
    baud: int = 115_200
    reply_timeout_s: float = 2.0
    infer_timeout_s: float = 60.0
    settle_s: float = 0.1

    def __post_init__(self) -> None:
        if not isinstance(self.port, str) or not self.port:
            raise TypeError(f"port: expected a device path, got {self.port!r}")
        if isinstance(self.baud, bool) or not isinstance(self.baud, int) or self.baud <= 0:
            raise TypeError(f"baud: expected a positive whole number, got {self.baud!r}")
        for key in ("reply_timeout_s", "infer_timeout_s", "settle_s"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise TypeError(f"{key}: expected a number of seconds >= 0, got {value!r}")


@dataclass(frozen=True)
class DeviceProfile:
    """One device: its name, how to reach it, its runtimes and budgets.

    `threads`, `power_sensor` and the `benchmark` mapping (any `BenchmarkOptions` field, e.g.
    `cpu_affinity: [2, 3]`, `cooldown_s: 5`) are this device's benchmark options: they apply
    where the caller set nothing (`toolkit.devices.precedence.resolve_options`).
    """

    name: str
    address: Optional[str] = None  # "host:port" of the agent (gRPC)
    transport: str = "grpc"
    tunnel: Optional[str] = None
    runtimes: tuple[str, ...] = ()
    threads: int = 0
    power_sensor: Optional[str] = None
    benchmark: BenchmarkOptions = field(default_factory=BenchmarkOptions)
    budgets: Budgets = field(default_factory=Budgets)
    tags: tuple[str, ...] = ()
    ssh: Optional[SshConfig] = None
    tls: Optional[TlsConfig] = None
    serial: Optional[SerialConfig] = None  # transport serial: the DUT's port on this host
    target: Optional[str] = None  # an agent's attached device (e.g. "serial:/dev/ttyACM0")
    description: str = ""
    source: Optional[str] = None  # file it was loaded from

    def __post_init__(self) -> None:
        where = self.source or f"profile {self.name!r}"
        if self.transport not in TRANSPORTS:
            raise ConfigError(
                f"{where}: transport: expected one of {TRANSPORTS}, got {self.transport!r}"
            )
        if self.tunnel not in TUNNELS:
            raise ConfigError(f"{where}: tunnel: expected 'ssh' or nothing, got {self.tunnel!r}")
        if self.transport == "grpc" and not self.address and self.tunnel != "ssh":
            raise ConfigError(f"{where}: address: expected 'host:port' for transport grpc")
        if (self.transport == "ssh" or self.tunnel == "ssh") and self.ssh is None:
            raise ConfigError(f"{where}: ssh: expected a mapping with at least 'host'")
        if self.transport == "serial" and self.serial is None:
            raise ConfigError(f"{where}: serial: expected a mapping with at least 'port'")
        if self.serial is not None and self.transport != "serial":
            raise ConfigError(
                f"{where}: serial: only with transport serial (a DUT behind an agent is "
                "reached with 'target')"
            )
        if self.target is not None and (
            self.transport not in ("grpc", "local") or not isinstance(self.target, str)
            or not self.target
        ):
            raise ConfigError(
                f"{where}: target: expected an attached device id of the agent "
                "(e.g. serial:/dev/ttyACM0), with transport grpc or local"
            )
        if self.address and not _looks_like_address(self.address):
            raise ConfigError(f"{where}: address: expected 'host:port', got {self.address!r}")
        for key in ("threads", "power_sensor"):
            if getattr(self, key) and getattr(self.benchmark, key):
                raise ConfigError(f"{where}: benchmark.{key}: {key} is set at the top level too; "
                                  "give it once")

    def benchmark_options(self) -> BenchmarkOptions:
        """This device's benchmark options: the `benchmark` mapping with `threads` and
        `power_sensor` from the top level; unset fields stay zero / empty."""
        top = {"threads": self.threads, "power_sensor": self.power_sensor or ""}
        return BenchmarkOptions(
            **{**self.benchmark.set_fields(), **{k: v for k, v in top.items() if v}}
        )

    @classmethod
    def from_mapping(cls, raw: Any, source: Optional[str] = None) -> DeviceProfile:
        """Builds a profile from parsed YAML, failing with the file and key on bad input."""
        where = source or "profile"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected a mapping of profile fields")
        known = {f.name for f in fields(cls)} - {"source"}
        unknown = set(raw) - known
        if unknown:
            raise ConfigError(
                f"{where}: {sorted(unknown)[0]}: unknown field; expected one of {sorted(known)}"
            )
        if not raw.get("name") or not isinstance(raw["name"], str):
            raise ConfigError(f"{where}: name: expected a non-empty string")
        values = dict(raw)
        values["budgets"] = Budgets.from_mapping(raw.get("budgets"), where)
        values["runtimes"] = tuple(_string_list(raw.get("runtimes"), where, "runtimes"))
        values["tags"] = tuple(_string_list(raw.get("tags"), where, "tags"))
        threads = raw.get("threads", 0)
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise ConfigError(f"{where}: threads: expected a whole number >= 0, got {threads!r}")
        values["benchmark"] = _benchmark(raw.get("benchmark"), where)
        values["ssh"] = _sub(SshConfig, raw.get("ssh"), where, "ssh")
        values["tls"] = _sub(TlsConfig, raw.get("tls"), where, "tls")
        values["serial"] = _sub(SerialConfig, raw.get("serial"), where, "serial")
        return cls(source=source, **values)


def _looks_like_address(address: str) -> bool:
    host, sep, port = address.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 < int(port) < 65536)


def _string_list(raw: Any, where: str, key: str) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise ConfigError(f"{where}: {key}: expected a list of strings, got {raw!r}")
    return raw


def _benchmark(raw: Any, where: str) -> BenchmarkOptions:
    if raw is None:
        return BenchmarkOptions()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: benchmark: expected a mapping, got {type(raw).__name__}")
    try:
        return BenchmarkOptions.from_mapping(raw)
    except ConfigError as exc:  # "benchmark options.X: ..." -> "<file>: benchmark.X: ..."
        raise ConfigError(f"{where}: {str(exc).replace('benchmark options', 'benchmark')}") \
            from None


def _sub(kind: type, raw: Any, where: str, key: str) -> Any:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: {key}: expected a mapping, got {type(raw).__name__}")
    known = {f.name for f in fields(kind)}
    for name in raw:
        if name not in known:
            raise ConfigError(
                f"{where}: {key}.{name}: unknown field; expected one of {sorted(known)}"
            )
    try:
        return kind(**raw)
    except TypeError as exc:
        raise ConfigError(f"{where}: {key}: {exc}") from None


def load_yaml(path: Path) -> Any:
    """Reads a YAML file, turning parse errors into a ConfigError naming the file."""
    import yaml

    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def find_profile_file(name: str) -> Optional[Path]:
    """Finds `NAME.yaml` in the profile folders; None when there is none."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    for folder in profile_dirs():
        for suffix in (".yaml", ".yml"):
            path = folder / f"{name}{suffix}"
            if path.is_file():
                return path
    return None


def load_profile(path_or_name: str) -> DeviceProfile:
    """Loads a profile from a YAML path or by name from the profile folders."""
    path = Path(path_or_name)
    if not path.is_file():
        found = find_profile_file(path_or_name)
        if found is None:
            searched = ", ".join(str(d) for d in profile_dirs())
            raise ConfigError(f"device profile {path_or_name!r} not found (searched {searched})")
        path = found
    return DeviceProfile.from_mapping(load_yaml(path), source=str(path))

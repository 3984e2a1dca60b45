"""Host-side errors: each subclasses our base and the builtin it is, so callers catch either."""

from __future__ import annotations

from typing import Optional

from device_agent.protocol import ERROR_KIND_METADATA  # noqa: F401 - the host's name for it
from device_agent.protocol import edgeloop_pb2 as pb
from toolkit.enums import StrEnum


class _ErrorKindBase(StrEnum):
    """Members are the proto's `ErrorKind` names without the prefix (``UNSAFE_MODEL``); a
    member compares equal to that text."""

    @property
    def proto_name(self) -> str:
        """The wire name, e.g. ``ERROR_KIND_UNSAFE_MODEL``."""
        return f"ERROR_KIND_{self.value}"

    @property
    def number(self) -> int:
        """The wire number (`pb.ErrorKind`)."""
        return pb.ErrorKind.Value(self.proto_name)

    @classmethod
    def from_proto(cls, number: int) -> ErrorKind:
        """The member for a wire number; ValueError for a number this host does not know."""
        return cls(pb.ErrorKind.Name(number).removeprefix("ERROR_KIND_"))

    @classmethod
    def from_name(cls, name: str) -> Optional[ErrorKind]:
        """The member for a wire name (with or without the prefix); None when unknown."""
        try:
            return cls(name.removeprefix("ERROR_KIND_"))
        except ValueError:
            return None


ErrorKind = _ErrorKindBase(
    "ErrorKind",
    [(n.removeprefix("ERROR_KIND_"),) * 2 for n in pb.ErrorKind.keys()],
    module=__name__,
)
"""What went wrong on a device, for Benchmark results and for failed calls alike: one member
per value of the proto's `ErrorKind` (generated from its descriptor, never listed here)."""


class EdgeloopError(Exception):
    """Base of every error edgeloop raises on purpose; its message is one actionable line."""


class ConfigError(EdgeloopError, ValueError):
    """A profile, recipe, fleet or option is malformed: names file, key and what was expected."""


class SetupError(ConfigError):
    """Inputs that cannot work together, found before any work (the model's input shape vs the
    dataset's samples, labels vs the model's outputs, a model function that raises). The
    command line ends with exit code 2 (`SETUP_ERROR_EXIT`)."""


class RecipeError(ConfigError):
    """A compression recipe is invalid (unknown key, bad value, impossible order)."""


class ModelFileError(EdgeloopError, FileNotFoundError):
    """A model path is missing or is not a model file edgeloop can read."""


class AgentError(EdgeloopError, RuntimeError):
    """The device agent answered with a failure, or could not be talked to.

    Attributes:
        kind: the ErrorKind the agent named for the failure (trailing metadata
            `ERROR_KIND_METADATA`), or None when it named none (a transport failure).
    """

    def __init__(self, message: str = "", kind: Optional[ErrorKind] = None) -> None:
        super().__init__(message)
        self.kind = kind


class AgentUnreachableError(AgentError, ConnectionError):
    """No agent answered at the device's address."""


class AgentLostError(AgentUnreachableError):
    """The link to the agent broke mid-call and the agent could not be reached again in time
    (or refused the connection: its process is gone), so the call's result is lost."""


class AgentTimeoutError(AgentError, TimeoutError):
    """The agent did not answer in time."""


class ProtocolMismatchError(AgentError):
    """The agent speaks another protocol version than this host."""


class RuntimeUnavailableError(AgentError):
    """The requested runtime is unknown or not installed on the device."""


class UnsafeModelError(AgentError):
    """The agent refused the model: loading it could execute code (models are data)."""


class ResultsStoreError(EdgeloopError, RuntimeError):
    """The results database cannot be used by this version (e.g. a newer schema)."""


class DatabaseUnreachableError(ResultsStoreError, ConnectionError):
    """The results database went away (a restart, a failover) and did not come back within
    the retry bound (`toolkit.db.engine.retry_s()`); the message names it, password hidden."""


class ExportError(EdgeloopError, RuntimeError):
    """Conversion to TFLite/ONNX failed, or the artifact disagrees with the torch model."""


class HostKeyError(EdgeloopError, ConnectionError):
    """An SSH host key is unknown or does not match known_hosts."""

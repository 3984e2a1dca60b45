"""Host-side errors: each subclasses our base and the builtin it is, so callers catch either."""

from __future__ import annotations


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
    """The device agent answered with a failure, or could not be talked to."""


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


class ExportError(EdgeloopError, RuntimeError):
    """Conversion to TFLite/ONNX failed, or the artifact disagrees with the torch model."""


class HostKeyError(EdgeloopError, ConnectionError):
    """An SSH host key is unknown or does not match known_hosts."""

"""The runtime contract: load a model file, describe its tensors, run it.

One file per runtime; each imports its module lazily so the agent starts without it and
reports it absent in GetInfo when the module is missing.

Models are data, never code. Whoever can push a model can make the agent load it, so
`Runtime.load` must not let the file's contents execute anything in the loading process:

- no unpickling of anything the file carries: `.pt2` archives are inspected first
  (`pt2_safety.check_pt2`: no ``use_pickle`` payloads, custom/opaque objects, compiled
  AOTInductor libraries, or graph strings torch would evaluate) and every torch.load runs with
  ``weights_only`` forced;
- no file outside the model: ONNX tensors stored as external data are refused
  (`onnx_safety.check_onnx`), so ONNX Runtime never opens another path;
- no libraries from the wire: no runtime registers custom-op libraries or delegates named by
  a model (ONNX Runtime custom-op libraries, TFLite custom-op registerers, Flex) — a model
  using an op the runtime lacks fails to load.

A refused model raises UnsafeModelError (ERROR_KIND_UNSAFE_MODEL on the wire), whose message
names the member or tensor and why. Children that load models also run under resource limits
(`device_agent.measure.limits`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from importlib import metadata
from typing import ClassVar, Optional

import numpy as np


class UnsafeModelError(ValueError):
    """The model file could execute code or read other files when loaded; it is refused."""


@dataclass(frozen=True)
class RuntimeStatus:
    """Whether a runtime can be used on this device, with which module and version."""

    name: str
    available: bool
    version: str = ""
    module: str = ""
    reason: str = ""
    accelerators: tuple[str, ...] = ()


@dataclass(frozen=True)
class TensorInfo:
    """One model input or output. Shape uses -1 for dynamic dimensions."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: Optional[float] = None
    zero_point: Optional[int] = None

    @property
    def quantized(self) -> bool:
        return (
            self.scale is not None and self.scale > 0 and self.dtype in ("int8", "uint8", "int16")
        )


@dataclass(frozen=True)
class OpRow:
    """One operator (or node) of a per-operator profile.

    Attributes:
        name: the node or layer as the runtime names it (ONNX node names and torch.export
            node paths carry the module path, e.g. ``/features/0/Conv`` or ``features.0``).
        op_type: the kind of op (``Conv``, ``aten.conv2d.default``, ``DEPTHWISE_CONV_2D``).
        calls: executions per inference.
        mean_ms: mean time per inference in milliseconds; 0 when the source has no times.
    """

    name: str
    op_type: str
    calls: int
    mean_ms: float


@dataclass(frozen=True)
class OpsTable:
    """A per-operator profile: rows, the profiler that made them, what it cannot tell.

    Attributes:
        rows: one per operator, in execution order.
        source: ``onnxruntime-profiler``, ``torch-profiler``, ``etdump``, ``tflite-op-histogram``.
        note: what the source cannot tell (empty when nothing to say).
    """

    rows: tuple[OpRow, ...]
    source: str
    note: str = ""

    @property
    def total_ms(self) -> float:
        """Sum of the rows' mean times (0 when the source has no times)."""
        return sum(r.mean_ms for r in self.rows)


class LoadedModel(ABC):
    """A model loaded into a runtime, ready to run.

    `set_inputs` stages inputs, `run` executes once (the timed part), `outputs` reads results.
    `profile_ops` is optional: runtimes with a per-operator profiler override it.
    """

    inputs: list[TensorInfo]
    outputs: list[TensorInfo]

    @abstractmethod
    def set_inputs(self, arrays: list[np.ndarray]) -> None:
        """Stages one array per input, already in the input's dtype and shape."""

    @abstractmethod
    def run(self) -> None:
        """Runs one inference on the staged inputs."""

    @abstractmethod
    def get_outputs(self) -> list[np.ndarray]:
        """Returns copies of the outputs of the last run."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Releases runtime resources."""

    def profile_ops(self, inputs: list[np.ndarray], runs: int) -> Optional[OpsTable]:
        """Runs `runs` inferences on `inputs` under the runtime's own per-operator profiler.

        Called after the timed window (its overhead never reaches the timed figures), on a
        second session or program where the runtime needs one. None: this runtime has no
        per-operator profile.
        """
        return None


class Runtime(ABC):
    """A model runtime on the device (TFLite, ONNX Runtime, torch, TFLite Micro)."""

    name: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]  # model formats it runs: "tflite", "onnx", "pt2"

    @classmethod
    @abstractmethod
    def status(cls) -> RuntimeStatus:
        """Says whether the runtime's module imports here, and its version."""

    @abstractmethod
    def load(self, path: str, threads: int = 0, accelerator: str = "") -> LoadedModel:
        """Loads the model file; `threads` 0 means the runtime's default."""


def installed_version(distribution: str) -> str:
    """The installed version of `distribution` from its package metadata ("" when unknown),
    read without importing it."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ""

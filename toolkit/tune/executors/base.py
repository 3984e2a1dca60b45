"""The contract between the tuning loop and where its work runs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Optional, Protocol

from toolkit.search.base import Candidate
from toolkit.tune.build import Build
from toolkit.tune.measure import Device


class CandidateBuilder(Protocol):
    """Turns a candidate into its artifact (on this host or elsewhere); see `Builder`."""

    def build(self, candidate: Candidate) -> Build: ...


class Executor(Protocol):
    """Opens the devices, makes the builder, and may start builds ahead of the loop.

    The runner's order: `start(config)`, `open_devices(...)`, `builder(...)`, then for each
    batch the strategy proposes `prefetch(builder, batch)` and `builder.build(c)` per
    candidate, and `close()` at the end (also after an error).
    """

    name: str

    def start(self, model_spec: str, data_spec: Optional[str]) -> None:
        """Connects to where the work runs (a no-op for local)."""

    def open_devices(self, specs: Sequence[str]) -> AbstractContextManager[list[Device]]:
        """Every device, opened; each Device's client serves one job at a time."""

    def builder(
        self,
        module: Any,
        input_shape: tuple[int, ...],
        data: Any,
        db: Any,
        log: Optional[Callable[[str], None]],
        seed: int,
    ) -> CandidateBuilder:
        """The builder of this run's candidates."""

    def prefetch(self, builder: CandidateBuilder, candidates: Sequence[Candidate]) -> None:
        """Starts building `candidates` now, so `builder.build` later finds them under way."""

    def close(self) -> None:
        """Releases what `start` took."""

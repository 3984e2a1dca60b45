"""Today's behaviour: builds one after another on this host, devices reached directly."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Optional

from toolkit.search.base import Candidate
from toolkit.tune.build import Builder
from toolkit.tune.measure import Device, open_devices


class LocalExecutor:
    """Builds on this host (`Builder`), measures through direct clients (`open_devices`)."""

    name = "local"

    def start(self, model_spec: str, data_spec: Optional[str]) -> None:
        return None

    def open_devices(self, specs: Sequence[str]) -> AbstractContextManager[list[Device]]:
        return open_devices(specs)

    def builder(
        self,
        module: Any,
        input_shape: tuple[int, ...],
        data: Any,
        db: Any,
        log: Optional[Callable[[str], None]],
        seed: int,
    ) -> Builder:
        return Builder(module, input_shape, data, db, log=log, seed=seed)

    def prefetch(self, builder: Any, candidates: Sequence[Candidate]) -> None:
        return None  # builds happen when the loop asks, one at a time

    def close(self) -> None:
        return None

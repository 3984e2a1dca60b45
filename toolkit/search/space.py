"""The search space: named dimensions with discrete choices, and how a point becomes a recipe.

Dimensions (each optional; a missing one keeps the base model's behaviour):
    prune_method: a `prune` method (`l1-structured`, `taylor-structured`, `magnitude`, ...).
    prune_amount: fraction of channels/weights to remove, 0 means no pruning.
    lowrank_ratio: SVD rank ratio for `lowrank`, None means no factorisation.
    cluster: k-means clusters per layer for `cluster`, None means no clustering.
    quantize: a `quantize` scheme (`fp16`, `int8-dynamic`, `int8-static`, `qat`), None: float32.
    threads: inference threads on the device (0: the runtime's default).

A point's recipe applies, in this order: prune, lowrank, finetune (when anything before it
changed the weights), cluster, quantize.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Optional

from toolkit.errors import ConfigError
from toolkit.search.base import Candidate, CandidateKind

KNOWN = ("prune_method", "prune_amount", "lowrank_ratio", "cluster", "quantize", "threads")


@dataclass(frozen=True)
class Dimension:
    """One searched parameter and its choices (the first is the default)."""

    name: str
    choices: tuple[Any, ...]


@dataclass(frozen=True)
class SearchSpace:
    """A small, discrete space of recipes.

    Attributes:
        dimensions: the searched parameters.
        finetune_epochs: epochs of fine-tuning after pruning/low-rank (default 1).
        final_epochs: epochs of the longer fine-tune NetAdapt ends with (default 3).
        calibration: samples for int8-static calibration (default 128).
        netadapt_method: the structured pruning method NetAdapt uses (default l1-structured).
        round_to: NetAdapt keeps each group's channels at a multiple of this (8 or 16 suit
            XNNPACK/NEON kernels; default 1: any width).
    """

    dimensions: tuple[Dimension, ...]
    finetune_epochs: int = 1
    final_epochs: int = 3
    calibration: int = 128
    netadapt_method: str = "l1-structured"
    round_to: int = 1
    _index: dict[str, Dimension] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for dim in self.dimensions:
            if dim.name not in KNOWN:
                raise ConfigError(f"search space: {dim.name}: unknown dimension; expected {KNOWN}")
            if not dim.choices:
                raise ConfigError(f"search space: {dim.name}: expected at least one choice")
            self._index[dim.name] = dim

    @classmethod
    def from_mapping(cls, raw: Any, where: str = "search space") -> SearchSpace:
        """Builds a space from YAML: `{dimensions: {name: [choices]}, finetune_epochs: 1, ...}`."""
        if not isinstance(raw, dict) or not isinstance(raw.get("dimensions"), dict):
            raise ConfigError(f"{where}: dimensions: expected a mapping of name to a choice list")
        dims = []
        for name, choices in raw["dimensions"].items():
            if not isinstance(choices, list):
                raise ConfigError(f"{where}: dimensions.{name}: expected a list, got {choices!r}")
            dims.append(Dimension(str(name), tuple(choices)))
        extra = {k: v for k, v in raw.items() if k != "dimensions"}
        for key, value in extra.items():
            if key not in ("finetune_epochs", "final_epochs", "calibration", "netadapt_method",
                           "round_to"):
                raise ConfigError(f"{where}: {key}: unknown field")
            if key != "netadapt_method" and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f"{where}: {key}: expected a whole number, got {value!r}")
        return cls(tuple(dims), **extra)

    def to_mapping(self) -> dict[str, Any]:
        """The YAML/JSON form `from_mapping` reads back."""
        return {
            "dimensions": {d.name: list(d.choices) for d in self.dimensions},
            "finetune_epochs": self.finetune_epochs,
            "final_epochs": self.final_epochs,
            "calibration": self.calibration,
            "netadapt_method": self.netadapt_method,
            "round_to": self.round_to,
        }

    def choices(self, name: str) -> tuple[Any, ...]:
        """The choices of a dimension; the default alone when the space does not search it."""
        dim = self._index.get(name)
        return dim.choices if dim else (DEFAULTS.get(name),)

    def default(self, name: str) -> Any:
        return self.choices(name)[0]

    @property
    def size(self) -> int:
        """Number of points in the grid."""
        n = 1
        for dim in self.dimensions:
            n *= len(dim.choices)
        return n

    def grid(self) -> Iterator[dict[str, Any]]:
        """Every point, in a fixed order (the first dimension varies slowest)."""
        names = [d.name for d in self.dimensions]
        for values in itertools.product(*(d.choices for d in self.dimensions)):
            yield dict(zip(names, values))

    def candidate(self, params: dict[str, Any], note: str = "") -> Candidate:
        """Turns a point (missing dimensions take their default) into a candidate."""
        full = {d.name: self.default(d.name) for d in self.dimensions}
        full.update(params)
        threads = full.get("threads")
        return Candidate(
            recipe=self.recipe(full),
            threads=int(threads) if threads is not None else 0,
            params=full,
            kind=CandidateKind.TRIAL,
            note=(note + ": " if note else "") + describe(full),
        )

    def recipe(self, params: dict[str, Any]) -> list[dict[str, dict[str, Any]]]:
        """The recipe (list of one-key steps) for a point."""
        steps: list[dict[str, dict[str, Any]]] = []
        amount = float(params.get("prune_amount") or 0.0)
        if amount > 0:
            method = params.get("prune_method") or DEFAULTS["prune_method"]
            steps.append({"prune": {"method": method, "amount": amount}})
        ratio = params.get("lowrank_ratio")
        if ratio:
            steps.append({"lowrank": {"rank_ratio": float(ratio)}})
        if steps and self.finetune_epochs > 0:
            steps.append({"finetune": {"epochs": self.finetune_epochs}})
        clusters = params.get("cluster")
        if clusters:
            steps.append({"cluster": {"clusters": int(clusters)}})
        scheme = params.get("quantize")
        if scheme:
            quantize: dict[str, Any] = {"scheme": str(scheme)}
            if scheme == "int8-static":
                quantize["calibration"] = self.calibration
            steps.append({"quantize": quantize})
        return steps


def describe(params: dict[str, Any]) -> str:
    """A short text for a point, e.g. "prune 0.5, int8-static, 1 thread"."""
    parts = []
    if params.get("prune_amount"):
        method = params.get("prune_method") or DEFAULTS["prune_method"]
        parts.append(f"prune {params['prune_amount']:g} {method}")
    if params.get("lowrank_ratio"):
        parts.append(f"lowrank {params['lowrank_ratio']:g}")
    if params.get("cluster"):
        parts.append(f"cluster {params['cluster']}")
    parts.append(str(params.get("quantize") or "fp32"))
    if params.get("threads"):
        parts.append(f"{params['threads']} thread{'s' if params['threads'] != 1 else ''}")
    return ", ".join(parts)


DEFAULTS: dict[str, Optional[Any]] = {
    "prune_method": "l1-structured",
    "prune_amount": 0.0,
    "lowrank_ratio": None,
    "cluster": None,
    "quantize": None,
    "threads": None,
}


def demo_space() -> SearchSpace:
    """The small space `edgeloop demo` searches: structured pruning and int8, 10 points."""
    return SearchSpace(
        (
            Dimension("prune_amount", (0.0, 0.25, 0.5, 0.625, 0.75)),
            Dimension("quantize", (None, "int8-static")),
        ),
        finetune_epochs=2,
        final_epochs=4,
    )


def default_space() -> SearchSpace:
    """The space `edgeloop tune` searches when none is given (the benchmark's too)."""
    return SearchSpace(
        (
            Dimension("prune_amount", (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75)),
            Dimension("quantize", (None, "fp16", "int8-dynamic", "int8-static")),
            Dimension("threads", (1, 2)),
        ),
        finetune_epochs=2,
        final_epochs=4,
    )

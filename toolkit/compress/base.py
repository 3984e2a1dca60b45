"""The compression-step contract: one module per technique, one recipe key each.

A recipe is an ordered list of (key, params) pairs. Each key maps to a `CompressionStep`
subclass registered with `@register_step`. A step validates its parameters when it is
constructed (before any work starts), then `apply` transforms a torch model and returns
the figures it wants in the model card.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from toolkit.errors import RecipeError


@dataclass
class StepContext:
    """What a step may use besides the model.

    Attributes:
        data: the dataset (`toolkit.data.Dataset`: train/test tensors and loaders).
        input_shape: one input's shape including the batch dimension, e.g. (1, 1, 8, 8).
        teacher: the model as it was before the recipe started (for distillation).
        seed: seed for anything random.
        history: recipe keys applied so far, in order.
        artifacts: facts a later stage needs (e.g. the quantization plan for export).
        log: progress callback, one line of text per call.
    """

    data: Any
    input_shape: tuple[int, ...]
    teacher: Any = None
    seed: int = 0
    history: list[str] = field(default_factory=list)
    artifacts: dict[str, Any] = field(default_factory=dict)
    log: Callable[[str], None] = lambda message: None


@dataclass
class StepReport:
    """A step's own figures for the model card (plain numbers and strings, units in the names)."""

    key: str
    figures: dict[str, Any] = field(default_factory=dict)


class CompressionStep(ABC):
    """One technique. Subclasses set `key` and implement `validate` and `apply`."""

    key: ClassVar[str]
    # Keys after which this step makes no sense, with the reason.
    refuse_after: ClassVar[dict[str, str]] = {}
    # When set, the only keys that may come after this step (e.g. `quantize` → {"huffman"}).
    only_followed_by: ClassVar[Optional[frozenset[str]]] = None

    def __init__(self, params: Optional[dict[str, Any]] = None, where: str = "recipe") -> None:
        self.where = where
        self.params = self.validate(dict(params or {}))

    @abstractmethod
    def validate(self, params: dict[str, Any]) -> Any:
        """Checks parameters and returns them typed; raises RecipeError naming the key."""

    @abstractmethod
    def apply(self, model: Any, ctx: StepContext) -> tuple[Any, StepReport]:
        """Returns the transformed model and this step's figures."""

    def refusal(self, earlier: list[CompressionStep]) -> Optional[str]:
        """Returns why this step cannot follow `earlier` (the steps before it), or None.

        The default applies `refuse_after` and the earlier steps' `only_followed_by`;
        a step overrides it for rules that depend on parameters.
        """
        for step in earlier:
            if step.key in self.refuse_after:
                return self.refuse_after[step.key]
            allowed = step.only_followed_by
            if allowed is not None and self.key not in allowed:
                listed = ", ".join(sorted(allowed)) or "nothing"
                return f"only {listed} may follow {step.key}"
        return None

    def check_model(self, model: Any) -> None:
        """Checks parameters that name parts of the model (layer names) before any work.

        Called on the model as loaded, before the first step runs; raises RecipeError.
        The default checks nothing.
        """
        return None

    def error(self, key: str, expected: str, got: Any) -> RecipeError:
        """Builds the one-line error every invalid parameter raises."""
        return RecipeError(f"{self.where}: {self.key}.{key}: expected {expected}, got {got!r}")


STEPS: dict[str, type[CompressionStep]] = {}


def register_step(cls: type[CompressionStep]) -> type[CompressionStep]:
    """Class decorator that makes a step available under its recipe key."""
    if cls.key in STEPS:
        raise ValueError(f"compression step {cls.key!r} registered twice")
    STEPS[cls.key] = cls
    return cls

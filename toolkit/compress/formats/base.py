"""The contract of an exported file that `compress` takes as its input (`.onnx`, ...).

A PyTorch model goes through `toolkit.compress.pipeline`; an exported file is compressed by
its own format's tools. Each entry format says which recipe steps it cannot run and why (one
line each, written into the card), and refuses a recipe that asks for one before any work.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from toolkit.compress.card import ArtifactRecord
from toolkit.compress.recipe import Recipe
from toolkit.errors import RecipeError

# suffix -> module under toolkit.compress.formats that defines `ENTRY`
ENTRY_MODULES = {".onnx": "onnx_file"}


@dataclass
class FileCard:
    """The card written beside a compressed exported file (`card.json`).

    Attributes:
        model: the input file's path as given.
        format: its entry format (`onnx`).
        dataset: the dataset spec used for calibration and the check.
        inputs: the model's input names and shapes (as the file declares them).
        recipe: the recipe as written, one {key: params} per step.
        parent_sha256: sha256 of the input file's bytes.
        parent_size_bytes: its size.
        steps: what each step did (key, params, figures, seconds).
        artifacts: the written file(s) by format, with the check against the input file.
        unavailable_steps: recipe key -> why this format cannot run it (one line).
        check: how the output compares with the input file on the host (top-1 agreement,
            accuracy, or the metric asked for).
        created: ISO time; toolkit_version: edgeloop's version.
    """

    model: str
    format: str
    dataset: str
    inputs: dict[str, list[Any]]
    recipe: list[dict[str, Any]]
    parent_sha256: str
    parent_size_bytes: int
    steps: list[dict[str, Any]] = field(default_factory=list)
    artifacts: dict[str, ArtifactRecord] = field(default_factory=dict)
    unavailable_steps: dict[str, str] = field(default_factory=dict)
    check: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    toolkit_version: str = ""

    def to_json(self) -> dict[str, Any]:
        """Returns the card as plain JSON-able data."""
        return asdict(self)

    def save(self, path: Path) -> Path:
        """Writes the card as indented JSON and returns the path."""
        import json

        from toolkit.compress.card import _plain

        path = Path(path)
        path.write_text(json.dumps(self.to_json(), indent=2, default=_plain) + "\n")
        return path


@dataclass
class FileCompression:
    """What compressing an exported file produced: the artifacts and the card."""

    artifacts: dict[str, Path]
    card: FileCard
    card_path: Path


class EntryFormat(ABC):
    """An exported file format `compress` accepts as input."""

    name: str = ""
    unavailable: dict[str, str] = {}
    """Recipe key -> one line: why this format cannot run the step."""

    def check_recipe(self, recipe: Recipe) -> None:
        """Raises RecipeError naming the first step this format cannot run, and why."""
        for index, step in enumerate(recipe.steps, start=1):
            reason = self.unavailable.get(step.key) or self.step_refusal(step)
            if reason:
                raise RecipeError(f"{recipe.source}: step {index} ({step.key}): unavailable "
                                  f"for a .{self.name} input: {reason}")

    def step_refusal(self, step: Any) -> Optional[str]:
        """Why this format cannot run `step` as parameterised (None: it can)."""
        return None

    @abstractmethod
    def compress(self, path: Path, recipe: Recipe, data: Any, out: Path,
                 metric: Optional[str], log: Callable[[str], None]) -> FileCompression:
        """Checks everything, then applies `recipe` to the file and writes `out`."""


def entry_for(model: Any) -> Optional[EntryFormat]:
    """The entry format for an exported file path (None: a PyTorch model spec)."""
    if not isinstance(model, (str, Path)):
        return None
    module = ENTRY_MODULES.get(Path(str(model)).suffix.lower())
    if module is None:
        return None
    return importlib.import_module(f"toolkit.compress.formats.{module}").ENTRY

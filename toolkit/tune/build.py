"""Builds a candidate's artifact with `compress()`, once per recipe.

A build is stored in the run's database as soon as it exists, so a resumed run reuses it.
Float models after prune/finetune/lowrank steps stay in memory (a few, least recently used
dropped first), so a recipe that extends one built before — every NetAdapt proposal extends
the model it was cut from — runs only its new steps.
"""

from __future__ import annotations

import copy
import hashlib
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from toolkit.search.base import Candidate, canonical_json
from toolkit.tune.trialdb import TrialDB

# Steps whose output is a plain float torch model another recipe may continue from.
CONTINUABLE = ("prune", "finetune", "lowrank", "distill", "replace")
KEEP_MODELS = 8


@dataclass
class Build:
    """A built artifact.

    Attributes:
        recipe_key: digest of the recipe it was built from.
        artifact: the .tflite file.
        sha256: the file's digest.
        size_bytes: the file's size.
        quantized: the recipe has a quantize step.
        host_accuracy_pct: the artifact's test accuracy run on the host's runtime, percent.
        widths: output channels of each prunable layer, {module name: channels}.
        parameters: parameter count of the torch model.
    """

    recipe_key: str
    artifact: str
    sha256: str
    size_bytes: int
    quantized: bool
    host_accuracy_pct: Optional[float]
    widths: dict[str, int] = field(default_factory=dict)
    parameters: int = 0


class Builder:
    """Turns candidates into artifacts under `root/<recipe key>/`.

    Args:
        module: the base torch model (left untouched).
        input_shape: its input shape with the batch dimension.
        data: the dataset (`toolkit.data.Dataset`).
        root: folder for the artifacts.
        db: the run's database (builds are recorded there).
        log: receives progress lines.
        seed: seed for the compression steps (default 0).
    """

    def __init__(self, module: Any, input_shape: tuple[int, ...], data: Any, root: Path,
                 db: TrialDB, log: Optional[Callable[[str], None]] = None, seed: int = 0) -> None:
        self.module = module
        self.input_shape = tuple(input_shape)
        self.data = data
        self.root = Path(root)
        self.db = db
        self.log = log
        self.seed = seed
        self._models: OrderedDict[str, Any] = OrderedDict()

    def build(self, candidate: Candidate) -> Build:
        """Returns the candidate's build, from the database when it was built before.

        Raises:
            EdgeloopError (RecipeError, ExportError, ...) or any error `compress()` raises.
        """
        stored = self.db.build(candidate.recipe_key)
        if stored is not None and _intact(stored):
            return Build(**stored)
        from toolkit.compress.pipeline import compress
        from toolkit.compress.recipe import load_recipe

        recipe = candidate.recipe
        start, model = self._continue_from(recipe)
        out = self.root / candidate.recipe_key
        rest = recipe[start:]
        result = compress(model, load_recipe(rest), self.data, out, export=("tflite",),
                          input_shape=self.input_shape, log=self.log, seed=self.seed)
        if all(next(iter(step)) in CONTINUABLE for step in recipe):
            self._remember(candidate.recipe_key, result.torch_model)
        artifact = Path(result.artifacts["tflite"])
        built = Build(
            recipe_key=candidate.recipe_key,
            artifact=str(artifact),
            sha256=file_sha256(artifact),
            size_bytes=artifact.stat().st_size,
            quantized=any(next(iter(step)) == "quantize" for step in recipe),
            host_accuracy_pct=host_accuracy(artifact, self.data),
            widths=_widths(result.torch_model, self.input_shape),
            parameters=sum(p.numel() for p in result.torch_model.parameters()),
        )
        self.db.put_build(candidate.recipe_key, asdict(built))
        return built

    def _continue_from(self, recipe: list[dict[str, Any]]) -> tuple[int, Any]:
        """(steps already applied, model) for the longest built prefix of `recipe`."""
        for k in range(len(recipe) - 1, 0, -1):
            key = recipe_key(recipe[:k])
            if key in self._models:
                self._models.move_to_end(key)
                return k, self._models[key]
        return 0, self.module

    def _remember(self, key: str, model: Any) -> None:
        self._models[key] = copy.deepcopy(model)
        while len(self._models) > KEEP_MODELS:
            self._models.popitem(last=False)


def recipe_key(recipe: list[dict[str, Any]]) -> str:
    """Digest of a recipe; equals `Candidate.recipe_key` for the same steps."""
    return hashlib.sha256(canonical_json(recipe).encode()).hexdigest()[:16]


def prunable_layers(module: Any, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Conv/Linear layers whose output channels structured pruning may remove, with their
    widths: every weighted layer except the one producing the model's output."""
    import torch

    from toolkit.compress.prune import output_layers, weighted_layers

    layers = weighted_layers(module)
    was_training = module.training
    module.eval()
    outputs = {id(m) for m in output_layers(module, torch.randn(*input_shape))}
    module.train(was_training)
    return {
        name: int(getattr(m, "out_channels", getattr(m, "out_features", 0)))
        for name, m in layers.items()
        if id(m) not in outputs
    }


def host_accuracy(artifact: Path, data: Any) -> float:
    """Test accuracy (percent) of the artifact run on this host's runtime (LiteRT/ORT)."""
    from toolkit.export.host_runtime import run_artifact

    outputs = run_artifact(Path(artifact), data.test_x.numpy())
    labels = data.test_y.numpy()
    return float(100.0 * (outputs.argmax(axis=1) == labels).mean())


def _widths(module: Any, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Prunable layer widths; empty for a model that is no longer a plain float module."""
    try:
        return prunable_layers(module, input_shape)
    except (RuntimeError, TypeError, AttributeError, NotImplementedError):
        return {}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _intact(stored: dict[str, Any]) -> bool:
    path = Path(stored.get("artifact", ""))
    return path.is_file() and file_sha256(path) == stored.get("sha256")

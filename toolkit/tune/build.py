"""Builds a candidate's artifact with `compress()`, once per recipe.

A build is recorded in the run's database as soon as it exists, and kept in a build cache
shared by runs. Float models after prune/finetune/lowrank steps are kept (a few in memory,
and saved beside their artifact), so a recipe that extends one built before — every NetAdapt
proposal extends the model it was cut from — runs only its new steps.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from toolkit.paths import edgeloop_home
from toolkit.search.base import Candidate, canonical_json
from toolkit.tune.artifacts import (
    file_sha256,
    host_accuracy,
    intact,
    read_json,
    recipe_key,
    torch_load,
    torch_save,
    widths_or_empty,
)
from toolkit.tune.trialdb import TrialDB

# Steps whose output is a plain float torch model another recipe may continue from.
CONTINUABLE = ("prune", "finetune", "lowrank", "distill", "replace")
KEEP_MODELS = 8
BUILD_FILE = "build.json"
MODEL_FILE = "model.pt"  # the compressed torch model, for recipes that continue from it


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
    """Turns candidates into artifacts, once per (base model, dataset, seed, recipe).

    Builds live in a cache shared by runs (`<edgeloop home>/builds/<key>/`): another run, or a
    resumed one, asking for the same recipe on the same model and data reuses the artifact
    (and so, its sha being the same, the cached measurements).

    Args:
        module: the base torch model (left untouched).
        input_shape: its input shape with the batch dimension.
        data: the dataset (`toolkit.data.Dataset`).
        db: the run's database (builds are recorded there).
        cache_root: the shared build cache (default `<edgeloop home>/builds`).
        log: receives progress lines.
        seed: seed for the compression steps (default 0).
    """

    def __init__(self, module: Any, input_shape: tuple[int, ...], data: Any, db: TrialDB,
                 cache_root: Optional[Path] = None, log: Optional[Callable[[str], None]] = None,
                 seed: int = 0) -> None:
        self.module = module
        self.input_shape = tuple(input_shape)
        self.data = data
        self.db = db
        self.cache_root = Path(cache_root) if cache_root else edgeloop_home() / "builds"
        self.log = log
        self.seed = seed
        self._models: OrderedDict[str, Any] = OrderedDict()
        self._identity = _identity(module, self.input_shape, data, seed)

    def build(self, candidate: Candidate) -> Build:
        """Returns the candidate's build: from the run, else from the cache, else made now.

        Raises:
            EdgeloopError (RecipeError, ExportError, ...) or any error `compress()` raises.
        """
        stored = self.db.build(candidate.recipe_key)
        if stored is not None and intact(stored):
            return Build(**stored)
        folder = self._folder(candidate.recipe)
        cached = read_json(folder / BUILD_FILE)
        if cached is None or not intact(cached):
            cached = asdict(self._make(candidate, folder))
        self.db.put_build(candidate.recipe_key, cached)
        return Build(**cached)

    def _make(self, candidate: Candidate, folder: Path) -> Build:
        from toolkit.compress.pipeline import compress
        from toolkit.compress.recipe import load_recipe

        recipe = candidate.recipe
        start, model = self._continue_from(recipe)
        scratch = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        shutil.rmtree(scratch, ignore_errors=True)
        result = compress(model, load_recipe(recipe[start:]), self.data, scratch,
                          export=("tflite",), input_shape=self.input_shape, log=self.log,
                          seed=self.seed)
        continuable = all(next(iter(step)) in CONTINUABLE for step in recipe)
        if continuable:
            self._remember(candidate.recipe_key, result.torch_model)
            torch_save(result.torch_model, scratch / MODEL_FILE)
        artifact = Path(result.artifacts["tflite"])
        built = Build(
            recipe_key=candidate.recipe_key,
            artifact=str(folder / artifact.name),
            sha256=file_sha256(artifact),
            size_bytes=artifact.stat().st_size,
            quantized=any(next(iter(step)) == "quantize" for step in recipe),
            host_accuracy_pct=host_accuracy(artifact, self.data),
            widths=widths_or_empty(result.torch_model, self.input_shape),
            parameters=sum(p.numel() for p in result.torch_model.parameters()),
        )
        (scratch / BUILD_FILE).write_text(json.dumps(asdict(built), indent=2))
        try:
            os.replace(scratch, folder)  # atomic: readers see a whole build or none
        except OSError:  # another process finished the same build first: keep theirs
            shutil.rmtree(scratch, ignore_errors=True)
            theirs = read_json(folder / BUILD_FILE)
            if theirs is not None and intact(theirs):
                return Build(**theirs)
            raise
        return built

    def _folder(self, recipe: list[dict[str, Any]]) -> Path:
        key = hashlib.sha256(canonical_json([self._identity, recipe]).encode()).hexdigest()
        return self.cache_root / key[:24]

    def _continue_from(self, recipe: list[dict[str, Any]]) -> tuple[int, Any]:
        """(steps already applied, model) for the longest built prefix of `recipe` (held in
        memory, or saved in the cache), else (0, the base model)."""
        for k in range(len(recipe) - 1, 0, -1):
            key = recipe_key(recipe[:k])
            if key in self._models:
                self._models.move_to_end(key)
                return k, self._models[key]
            saved = self._folder(recipe[:k]) / MODEL_FILE
            if saved.is_file():
                model = torch_load(saved)
                self._remember(key, model)
                return k, model
        return 0, self.module

    def _remember(self, key: str, model: Any) -> None:
        self._models[key] = copy.deepcopy(model)
        while len(self._models) > KEEP_MODELS:
            self._models.popitem(last=False)


def _identity(module: Any, input_shape: tuple[int, ...], data: Any, seed: int) -> str:
    """What a build depends on besides its recipe: weights, input shape, data, seed, code."""
    from toolkit import __version__
    from toolkit.compress.metrics import state_sha256

    digest = hashlib.sha256()
    for tensor in (data.train_x, data.train_y, data.test_x, data.test_y):
        digest.update(tensor.contiguous().numpy().tobytes())
    return canonical_json([state_sha256(module), list(input_shape), digest.hexdigest(), seed,
                           __version__])

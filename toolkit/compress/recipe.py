"""Recipes: an ordered list of compression steps, loaded from YAML or Python and checked up front.

A recipe is a YAML mapping (steps in the order written), a list of one-key mappings (when a
step repeats), or an empty file (export only). Every step is built, and so validated, and the
order rules are checked before any model is touched.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from toolkit.compress.base import STEPS, CompressionStep
from toolkit.errors import RecipeError

# Recipe key -> the module under toolkit.compress.steps that registers it; a missing module
# is an error, never a silent skip.
STEP_MODULES = {
    "prune": "prune", "sensitivity": "sensitivity", "finetune": "finetune",
    "lowrank": "lowrank", "distill": "distill", "cluster": "cluster", "replace": "replace",
    "quantize": "quantize.step", "huffman": "huffman",
}

RecipeSpec = Union[str, Path, Mapping, list, None, "Recipe"]


@dataclass
class Recipe:
    """A validated recipe.

    Attributes:
        source: where it came from (a file path, or `<recipe>` for Python objects).
        steps: the constructed (validated) steps, in order.
        entries: the recipe as written: one {key: params} mapping per step.
    """

    source: str
    steps: list[CompressionStep] = field(default_factory=list)
    entries: list[dict[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        """The step keys in order."""
        return [step.key for step in self.steps]


def register_all_steps() -> dict[str, type[CompressionStep]]:
    """Imports every step module so each registers its key; returns the registry."""
    for name in STEP_MODULES.values():
        module = f"toolkit.compress.steps.{name}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                raise RecipeError(f"compression step module {module} is missing") from exc
            raise
    return STEPS


def load_recipe(spec: RecipeSpec) -> Recipe:
    """Loads and validates a recipe.

    Args:
        spec: a YAML file path (an empty file is the empty recipe), a mapping
            {key: params}, a list of one-key mappings, None (empty), or a Recipe.

    Raises:
        RecipeError: unreadable file, unknown key (the message lists the known keys), bad
            parameter (names the key and what was expected), or a step in an order that makes
            no sense (with the reason).
    """
    if isinstance(spec, Recipe):
        return spec
    source, raw = _read(spec)
    entries = _entries(source, raw)
    steps_by_key = register_all_steps()
    recipe = Recipe(source=source, entries=entries)
    for index, entry in enumerate(entries, start=1):
        ((key, params),) = entry.items()
        where = f"{source}: step {index} ({key})"
        if key not in steps_by_key:
            raise RecipeError(f"{where}: unknown step {key!r}; known steps: "
                              f"{', '.join(sorted(steps_by_key))}")
        step = steps_by_key[key](params, where=where)
        reason = step.refusal(recipe.steps)
        if reason:
            raise RecipeError(f"{where}: {key} cannot come after "
                              f"{' → '.join(s.key for s in recipe.steps)}: {reason}")
        recipe.steps.append(step)
    return recipe


def _read(spec: Any) -> tuple[str, Any]:
    if spec is None:
        return "<recipe>", None
    if isinstance(spec, (str, Path)):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise RecipeError(f"{path}: recipe file does not exist")
        import yaml

        try:
            return str(path), yaml.load(path.read_text(), Loader=_unique_keys_loader())
        except _DuplicateKey as exc:
            raise RecipeError(f"{path}: step {exc} appears twice in a mapping; to repeat a "
                              "step write the recipe as a list of one-key mappings") from None
        except yaml.YAMLError as exc:
            raise RecipeError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from exc
    return "<recipe>", spec


class _DuplicateKey(Exception):
    """A YAML mapping repeats a key (YAML would silently keep the last one)."""


def _unique_keys_loader() -> type:
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):  # noqa: ANN001 - PyYAML's signature
            keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
            for key in keys:
                if keys.count(key) > 1:
                    raise _DuplicateKey(repr(key))
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def _entries(source: str, raw: Any) -> list[dict[str, dict[str, Any]]]:
    if raw is None:
        return []
    if isinstance(raw, Mapping):
        items = list(raw.items())
    elif isinstance(raw, list):
        items = []
        for index, item in enumerate(raw, start=1):
            if not isinstance(item, Mapping) or len(item) != 1:
                raise RecipeError(f"{source}: step {index}: expected a one-key mapping "
                                  f"such as {{prune: {{amount: 0.5}}}}, got {item!r}")
            items.extend(item.items())
    else:
        raise RecipeError(f"{source}: expected a mapping of steps or a list of one-key "
                          f"mappings, got {type(raw).__name__}")
    entries = []
    for index, (key, params) in enumerate(items, start=1):
        if not isinstance(key, str):
            raise RecipeError(f"{source}: step {index}: expected a step name, got {key!r}")
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise RecipeError(f"{source}: step {index} ({key}): expected a mapping of "
                              f"parameters, got {params!r}")
        entries.append({key: dict(params)})
    return entries

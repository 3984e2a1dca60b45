"""Facts about a built artifact and its model: sha256, host accuracy, prunable layer widths."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

from toolkit.hash_index import file_sha256
from toolkit.search.base import canonical_json


def torch_save(module: Any, path: Path) -> None:
    import torch

    torch.save(module, path)


def torch_load(path: Path) -> Any:
    import torch

    return torch.load(path, weights_only=False)  # our own cache, written by torch_save


def read_json(path: Path) -> Optional[dict[str, Any]]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def recipe_key(recipe: list[dict[str, Any]]) -> str:
    """Digest of a recipe; equals `Candidate.recipe_key` for the same steps."""
    return hashlib.sha256(canonical_json(recipe).encode()).hexdigest()[:16]


def prunable_layers(module: Any, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Prunable dependency groups with their widths, {group name: channels (heads for an
    attention block)}: what structured pruning and NetAdapt cut (`toolkit.compress.groups`)."""
    from toolkit.compress.groups import group_widths

    return group_widths(module, input_shape)


def group_costs(module: Any, input_shape: tuple[int, ...]) -> dict[str, float]:
    """Host-side MACs of one unit of each prunable group (NetAdapt's estimate for groups it
    has not measured)."""
    from toolkit.compress.groups import group_macs

    return group_macs(module, input_shape)


def host_accuracy(artifact: Path, data: Any) -> float:
    """Test accuracy (percent) of the artifact run on this host's runtime (LiteRT/ORT)."""
    from toolkit.export.host_runtime import run_artifact
    from toolkit.quality import accuracy_pct

    return accuracy_pct(run_artifact(Path(artifact), data.test_x.numpy()), data.test_y)


def widths_or_empty(module: Any, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Prunable layer widths; empty for a model that is no longer a plain float module."""
    from toolkit.errors import RecipeError

    try:
        return prunable_layers(module, input_shape)
    except (RecipeError, RuntimeError, TypeError, AttributeError, NotImplementedError):
        return {}


def intact(stored: dict[str, Any]) -> bool:
    path = Path(stored.get("artifact", ""))
    return path.is_file() and file_sha256(path) == stored.get("sha256")

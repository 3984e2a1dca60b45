"""`sensitivity`: how much accuracy each layer loses when pruned alone, at several ratios.

Each (layer, ratio) cell prunes a fresh copy of the model in that one layer (structurally:
its output channels, with the layers that depend on them) and measures test accuracy. The
table guides per-layer amounts: robust layers can take more pruning. As a recipe step it
leaves the model unchanged; it can hand per-layer amounts to the next `prune` step.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from torch import nn

from toolkit.compress.base import CompressionStep, StepContext, StepReport, register_step
from toolkit.compress.groups import find_groups
from toolkit.compress.layers import resolve_layers, weighted_layers
from toolkit.compress.params import check_known, choice, layer_names, ratio
from toolkit.compress.steps.prune import (
    PER_LAYER_ARTIFACT,
    STRUCTURED,
    UNSTRUCTURED,
    PruneParams,
    prune_structured,
    prune_unstructured,
    resolve_prunable,
)
from toolkit.errors import RecipeError


@dataclass
class SensitivityRow:
    """One cell: `layer` pruned alone by `ratio` gives `accuracy_pct`, `drop_pts` below baseline."""

    layer: str
    ratio: float
    accuracy_pct: float
    drop_pts: float


@dataclass
class SensitivityTable:
    """Per-layer accuracy drops (percentage points) for one pruning method."""

    method: str
    baseline_accuracy_pct: float
    rows: list[SensitivityRow] = field(default_factory=list)

    def to_frame(self) -> Any:
        """Returns the rows as a pandas DataFrame: layer, ratio, accuracy_pct, drop_pts."""
        import pandas as pd

        return pd.DataFrame([asdict(row) for row in self.rows])

    def amounts(self, max_drop: float) -> dict[str, float]:
        """Per layer, the largest ratio whose drop is at most `max_drop` points (0.0 if none)."""
        best: dict[str, float] = {}
        for row in self.rows:
            best.setdefault(row.layer, 0.0)
            if row.drop_pts <= max_drop:
                best[row.layer] = max(best[row.layer], row.ratio)
        return best

    def plot(self, path: Union[str, Path]) -> Path:
        """Writes a PNG: accuracy drop against ratio, one line per layer. Returns the path."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(6, 4))
        for layer in dict.fromkeys(row.layer for row in self.rows):
            cells = [row for row in self.rows if row.layer == layer]
            ax.plot([c.ratio for c in cells], [c.drop_pts for c in cells], marker="o", label=layer)
        ax.set_xlabel(f"pruning ratio ({self.method})")
        ax.set_ylabel("accuracy drop (points)")
        ax.set_title(f"layer sensitivity, baseline {self.baseline_accuracy_pct:.2f}%")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


def layer_sensitivity(
    model: nn.Module,
    data: Any,
    ratios: Sequence[float] = (0.25, 0.5, 0.75),
    method: str = "l1-structured",
    layers: Optional[Sequence[str]] = None,
    seed: int = 0,
) -> SensitivityTable:
    """Prunes each layer alone at each ratio and measures the test accuracy drop.

    Args:
        model: the model to analyse (not modified).
        data: a `toolkit.data.Dataset`; accuracy is measured on its test split.
        ratios: pruning ratios to try, each 0 < r < 1. Default 0.25, 0.5, 0.75.
        method: a `prune` method (`l1-structured` default, `taylor-structured`, `magnitude`,
            `random`, `taylor`).
        layers: layer names to analyse (default: every Conv/Linear layer; for structured
            methods every prunable dependency group, named by its leading layer, an attention
            block for its heads). A ratio that removes no channel of a group is left out.
        seed: seed for random and Taylor importance.

    Returns:
        The table of (layer, ratio, accuracy, drop) rows.
    """
    from toolkit.models.train import accuracy

    ctx = StepContext(data=data, input_shape=(1, *data.input_shape), seed=seed)
    all_layers = weighted_layers(model)
    if layers is None and method in STRUCTURED:
        layers = [g.name for g in find_groups(model, ctx.input_shape) if g.prunable]
    elif layers is None:
        layers = list(all_layers)
    table = SensitivityTable(method, accuracy(model, data.test_loader()))
    for name in layers:
        for r in ratios:
            trial = copy.deepcopy(model)
            if method in STRUCTURED:
                params = PruneParams(method=method, amount=None, scope="layer")
                try:
                    prune_structured(trial, ctx, params, {name: r})
                except RecipeError:  # this ratio removes no channel of a narrow group
                    continue
            else:
                others = tuple(n for n in all_layers if n != name)
                params = PruneParams(method=method, amount=r, scope="layer", skip=others)
                prune_unstructured(trial, ctx, params, {})
            acc = accuracy(trial, data.test_loader())
            table.rows.append(
                SensitivityRow(
                    name, float(r), round(acc, 3), round(table.baseline_accuracy_pct - acc, 3)
                )
            )
    return table


@dataclass
class SensitivityParams:
    ratios: tuple[float, ...] = (0.25, 0.5, 0.75)
    method: str = "l1-structured"
    layers: tuple[str, ...] = ()
    apply_to_next_prune: bool = False
    max_drop: float = 1.0
    plot: Optional[str] = None
    table: Optional[str] = None


@register_step
class SensitivityStep(CompressionStep):
    """Measures per-layer pruning sensitivity; the model is left unchanged.

    Parameters:
        ratios: pruning ratios to try, each 0 < r < 1 (default [0.25, 0.5, 0.75]).
        method: the `prune` method to probe with (default `l1-structured`); use the one the
            following `prune` step uses.
        layers: layer names to analyse (default: every Conv/Linear layer except, for
            structured methods, the classifier).
        apply_to_next_prune: give the next `prune` step per-layer amounts: for each layer the
            largest ratio whose drop is at most `max_drop` (0 when none is) (default false).
        max_drop: accuracy drop allowed per layer, in points (default 1.0).
        plot: path of a PNG plot to write (default none).
        table: path of a CSV table to write (default none).
    """

    key = "sensitivity"

    def validate(self, params: dict[str, Any]) -> SensitivityParams:
        d = SensitivityParams()
        check_known(self, params, SensitivityParams)
        ratios = params.get("ratios", list(d.ratios))
        if not isinstance(ratios, (list, tuple)) or not ratios:
            raise self.error("ratios", "a non-empty list of numbers 0 < r < 1", ratios)
        checked = tuple(float(ratio(self, {"ratios": r}, "ratios", 0.0)) for r in ratios)
        max_drop = params.get("max_drop", d.max_drop)
        if not isinstance(max_drop, (int, float)) or isinstance(max_drop, bool) or max_drop < 0:
            raise self.error("max_drop", "a number of accuracy points >= 0", max_drop)
        for key in ("plot", "table"):
            if params.get(key) is not None and not isinstance(params[key], str):
                raise self.error(key, "a file path", params[key])
        return SensitivityParams(
            ratios=checked,
            method=choice(self, params, "method", d.method, UNSTRUCTURED + STRUCTURED),
            layers=layer_names(self, params, "layers"),
            apply_to_next_prune=choice(self, params, "apply_to_next_prune", False, (True, False)),
            max_drop=float(max_drop),
            plot=params.get("plot"),
            table=params.get("table"),
        )

    def apply(self, model: nn.Module, ctx: StepContext) -> tuple[nn.Module, StepReport]:
        p = self.params
        if p.layers and p.method in STRUCTURED:
            resolve_prunable(self, model, "layers", p.layers)
        elif p.layers:
            resolve_layers(self, model, "layers", p.layers)
        if ctx.data is None:
            raise self.error("method", "a dataset to measure accuracy on", None)
        table = layer_sensitivity(model, ctx.data, p.ratios, p.method, p.layers or None, ctx.seed)
        ctx.artifacts["sensitivity"] = table
        figures: dict[str, Any] = {
            "method": p.method,
            "baseline_accuracy_pct": round(table.baseline_accuracy_pct, 3),
            "drop_pts": {f"{row.layer}@{row.ratio:g}": row.drop_pts for row in table.rows},
        }
        if p.apply_to_next_prune:
            amounts = table.amounts(p.max_drop)
            ctx.artifacts[PER_LAYER_ARTIFACT] = amounts
            figures["per_layer_amounts"] = amounts
        base = Path(ctx.artifacts.get("out_dir", "."))
        if p.plot:
            figures["plot"] = str(table.plot(base / p.plot))
        if p.table:
            path = base / p.table
            path.parent.mkdir(parents=True, exist_ok=True)
            table.to_frame().to_csv(path, index=False)
            figures["table"] = str(path)
        return model, StepReport(self.key, figures)

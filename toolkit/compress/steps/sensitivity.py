"""`sensitivity`: how much accuracy each layer loses when pruned alone, at several ratios.

Each (layer, ratio) cell prunes a fresh copy of the model in that one layer (structurally:
its output channels, with the layers that depend on them) and measures test accuracy. The
table guides per-layer amounts: robust layers can take more pruning. As a recipe step it
leaves the model unchanged; it can hand per-layer amounts to the next `prune` step.

Given a per-operator profile (`ops_from`: `edgeloop profile MODEL.pt2 --per-op --json`), each
layer also shows what it costs on the device (ms per inference and share of the total), so
the layer that costs most and loses least is the one to prune first.
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
from toolkit.errors import ConfigError, RecipeError
from toolkit.measurement import OpProfile
from toolkit.op_costs import LayerCost, cost_of, layer_costs, load_ops


@dataclass
class SensitivityRow:
    """One cell: `layer` pruned alone by `ratio` gives `accuracy_pct`, `drop_pts` below baseline."""

    layer: str
    ratio: float
    accuracy_pct: float
    drop_pts: float


@dataclass
class SensitivityTable:
    """Per-layer accuracy drops (percentage points) for one pruning method.

    `costs`: layer -> its device cost from a per-operator profile (empty when none was given).
    """

    method: str
    baseline_accuracy_pct: float
    rows: list[SensitivityRow] = field(default_factory=list)
    costs: dict[str, LayerCost] = field(default_factory=dict)

    def attach_costs(self, ops: Sequence[OpProfile]) -> dict[str, LayerCost]:
        """Maps a per-operator profile onto the table's layers; returns the layers mapped."""
        by_module = layer_costs(ops)
        for layer in dict.fromkeys(row.layer for row in self.rows):
            cost = cost_of(layer, by_module)
            if cost is not None:
                self.costs[layer] = cost
        return self.costs

    def to_frame(self) -> Any:
        """Returns the rows as a pandas DataFrame: layer, ratio, accuracy_pct, drop_pts, and
        cost_ms / cost_share where a per-operator profile was attached."""
        import pandas as pd

        records = [asdict(row) for row in self.rows]
        if self.costs:
            for record in records:
                cost = self.costs.get(record["layer"])
                record["cost_ms"] = None if cost is None else round(cost.mean_ms, 6)
                record["cost_share"] = None if cost is None else round(cost.share, 4)
        return pd.DataFrame(records)

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
    ops_from: Optional[str] = None
    ops: tuple[OpProfile, ...] = ()


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
        ops_from: a measurement JSON with a per-operator profile of the same model
            (`edgeloop profile MODEL.pt2 --per-op --json > ops.json`); each layer then shows
            its device cost (ms, share). Runtimes that keep module names (the torch runtime's
            .pt2) map to layers; others map to none (default none).
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
        for key in ("plot", "table", "ops_from"):
            if params.get(key) is not None and not isinstance(params[key], str):
                raise self.error(key, "a file path", params[key])
        ops: tuple[OpProfile, ...] = ()
        if params.get("ops_from"):
            try:
                ops = load_ops(params["ops_from"])
            except ConfigError as exc:
                raise self.error("ops_from", f"a per-op measurement JSON ({exc})",
                                 params["ops_from"]) from None
        return SensitivityParams(
            ratios=checked,
            method=choice(self, params, "method", d.method, UNSTRUCTURED + STRUCTURED),
            layers=layer_names(self, params, "layers"),
            apply_to_next_prune=choice(self, params, "apply_to_next_prune", False, (True, False)),
            max_drop=float(max_drop),
            plot=params.get("plot"),
            table=params.get("table"),
            ops_from=params.get("ops_from"),
            ops=ops,
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
        if p.ops:
            costs = table.attach_costs(p.ops)
            figures["layer_cost_ms"] = {k: round(c.mean_ms, 6) for k, c in costs.items()}
            figures["layer_cost_share"] = {k: round(c.share, 4) for k, c in costs.items()}
            unmapped = sorted({row.layer for row in table.rows} - set(costs))
            if unmapped:
                ctx.log(f"sensitivity: no per-op rows map to {', '.join(unmapped)} "
                        "(the profile's runtime keeps no module names, or another model)")
            for line in sensitivity_lines(table):
                ctx.log(line)
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


def sensitivity_lines(table: SensitivityTable) -> list[str]:
    """Per layer: the accuracy drop at each ratio and, where known, its device cost."""
    lines = []
    for layer in dict.fromkeys(row.layer for row in table.rows):
        drops = ", ".join(f"{r.ratio:g}: -{r.drop_pts:.2f}" for r in table.rows
                          if r.layer == layer)
        cost = table.costs.get(layer)
        where = f"{cost.mean_ms:.3g} ms ({cost.share:.0%}) on the device" if cost else "cost -"
        lines.append(f"sensitivity {layer}: {where}; drop pts at {drops}")
    return lines

"""`prune`: unstructured (magnitude, random, Taylor) and structured channel pruning.

Unstructured pruning bakes zeros into plain weight tensors (no parametrisation hooks are
left behind, so export sees ordinary modules). Structured pruning removes channels for real
with Torch-Pruning's dependency graph, which keeps conv→bn→conv chains, residual additions and
flatten→linear consistent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn

from toolkit.compress.base import CompressionStep, StepContext, StepReport, register_step
from toolkit.compress.layers import (  # noqa: F401 - re-exported
    LAYER_TYPES,
    count_params,
    output_layers,
    resolve_layers,
    set_module,
    sparsity,
    weighted_layers,
)
from toolkit.compress.params import (  # noqa: F401 - re-exported
    check_known,
    choice,
    integer,
    layer_names,
    number,
    ratio,
    ratio_map,
)

UNSTRUCTURED = ("magnitude", "random", "taylor")
STRUCTURED = ("l1-structured", "taylor-structured")
# Per-layer amounts a `sensitivity` step left for the next `prune` step.
PER_LAYER_ARTIFACT = "prune_per_layer"
# Set when zeros were baked into weights, so `finetune` keeps them at zero.
SPARSE_ARTIFACT = "sparse_weights"


@dataclass
class PruneParams:
    method: str = "magnitude"
    amount: float = 0.5
    scope: Optional[str] = None
    per_layer: dict[str, float] = field(default_factory=dict)
    skip: tuple[str, ...] = ()
    batches: int = 4


@register_step
class PruneStep(CompressionStep):
    """Removes weights (unstructured) or whole channels (structured).

    Parameters:
        method: `magnitude` (default; smallest |w| zeroed), `random` (a baseline), `taylor`
            (|w·∂L/∂w| importance, unstructured), `l1-structured` (channels with the smallest
            L1 norm removed) or `taylor-structured` (channels with the smallest Taylor
            importance removed). Structured methods really remove channels.
        amount: fraction to prune, 0 < amount < 1 (default 0.5): of the weights for the
            unstructured methods, of each layer's output channels for the structured ones.
        scope: `global` (one threshold/ranking across all layers) or `layer` (each layer to
            `amount`). Default: `global` for unstructured methods, `layer` for structured.
        per_layer: {layer name: amount} overriding `amount` for those layers (default none).
            A preceding `sensitivity` step with `apply_to_next_prune` fills it.
        skip: layer names left untouched (default none). The final classifier is never
            structurally pruned on its output.
        batches: training batches (of 64) used to estimate Taylor importance (default 4).
    """

    key = "prune"

    def validate(self, params: dict[str, Any]) -> PruneParams:
        d = PruneParams()
        check_known(self, params, PruneParams)
        method = choice(self, params, "method", d.method, UNSTRUCTURED + STRUCTURED)
        scope = choice(
            self,
            params,
            "scope",
            "layer" if method in STRUCTURED else "global",
            ("global", "layer"),
        )
        return PruneParams(
            method=method,
            amount=ratio(self, params, "amount", d.amount),
            scope=scope,
            per_layer=ratio_map(self, params, "per_layer", allow_zero=True),
            skip=layer_names(self, params, "skip"),
            batches=integer(self, params, "batches", d.batches, minimum=1),
        )

    def apply(self, model: nn.Module, ctx: StepContext) -> tuple[nn.Module, StepReport]:
        p = self.params
        layers = weighted_layers(model)
        per_layer = dict(ctx.artifacts.pop(PER_LAYER_ARTIFACT, {}) or {})
        per_layer.update(p.per_layer)
        resolve_layers(self, model, "per_layer", per_layer)
        resolve_layers(self, model, "skip", p.skip)
        if p.method in ("taylor", "taylor-structured") and ctx.data is None:
            raise self.error("method", f"a dataset for {p.method} importance", None)
        before = count_params(model)
        widths = {name: _width(layer) for name, layer in layers.items()}
        figures: dict[str, Any] = {"method": p.method, "amount": p.amount, "scope": p.scope}
        if p.method in STRUCTURED:
            prune_structured(model, ctx, p, per_layer)
            after_layers = weighted_layers(model)
            figures["channels_removed"] = {
                name: widths[name] - _width(after_layers[name])
                for name in widths
                if name in after_layers and widths[name] != _width(after_layers[name])
            }
        else:
            prune_unstructured(model, ctx, p, per_layer)
            ctx.artifacts[SPARSE_ARTIFACT] = True
            figures["layer_sparsity"] = {
                name: round(float((layer.weight == 0).float().mean()), 4)
                for name, layer in layers.items()
            }
        figures.update(params_before=before, params_after=count_params(model))
        figures["sparsity"] = round(sparsity(model), 4)
        ctx.log(
            f"prune {p.method}: {before} -> {figures['params_after']} parameters, "
            f"sparsity {figures['sparsity']:.3f}"
        )
        return model, StepReport(self.key, figures)


def prune_unstructured(
    model: nn.Module, ctx: StepContext, p: PruneParams, per_layer: dict[str, float]
) -> None:
    """Zeros the least important weights in place (exactly round(amount·n) per pool)."""
    layers = {n: m for n, m in weighted_layers(model).items() if n not in p.skip}
    scores = _scores(model, layers, p.method, ctx, p.batches)
    pools: list[tuple[list[str], float]] = [([n], a) for n, a in per_layer.items() if n in layers]
    rest = [n for n in layers if n not in per_layer]
    if p.scope == "global" and rest:
        pools.append((rest, p.amount))
    else:
        pools.extend(([n], p.amount) for n in rest)
    with torch.no_grad():
        for names, amount in pools:
            flat = torch.cat([scores[n].flatten() for n in names])
            k = int(round(amount * flat.numel()))
            if k == 0:
                continue
            keep = torch.ones_like(flat, dtype=torch.bool)
            keep[torch.argsort(flat, stable=True)[:k]] = False
            offset = 0
            for n in names:
                weight = layers[n].weight
                size = weight.numel()
                weight.mul_(keep[offset : offset + size].view_as(weight))
                offset += size


def prune_structured(
    model: nn.Module, ctx: StepContext, p: PruneParams, per_layer: dict[str, float]
) -> None:
    """Removes output channels with Torch-Pruning, keeping dependent layers consistent."""
    import torch_pruning as tp

    layers = weighted_layers(model)
    example = torch.randn(*ctx.input_shape)
    ignored = [layers[n] for n in p.skip] + output_layers(model, example)
    if p.method == "taylor-structured":
        importance: Any = tp.importance.TaylorImportance()
    else:
        importance = tp.importance.MagnitudeImportance(p=1)
    was_training = model.training
    model.eval()
    pruner = tp.pruner.MetaPruner(
        model,
        example,
        importance=importance,
        global_pruning=p.scope == "global",
        pruning_ratio=p.amount,
        pruning_ratio_dict={layers[n]: a for n, a in per_layer.items()},
        ignored_layers=ignored,
    )
    if p.method == "taylor-structured":
        _accumulate_gradients(model, ctx, p.batches)
    pruner.step()
    model.zero_grad(set_to_none=True)
    model.train(was_training)


def _scores(
    model: nn.Module, layers: dict[str, nn.Module], method: str, ctx: StepContext, batches: int
) -> dict[str, torch.Tensor]:
    if method == "random":
        generator = torch.Generator().manual_seed(ctx.seed)
        return {n: torch.rand(m.weight.shape, generator=generator) for n, m in layers.items()}
    if method == "taylor":
        _accumulate_gradients(model, ctx, batches)
        scores = {n: (m.weight * m.weight.grad).abs().detach() for n, m in layers.items()}
        model.zero_grad(set_to_none=True)
        # Weights already at zero stay the least important.
        return {n: torch.where(layers[n].weight == 0, -1.0, s) for n, s in scores.items()}
    return {n: m.weight.detach().abs() for n, m in layers.items()}


def _accumulate_gradients(model: nn.Module, ctx: StepContext, batches: int) -> None:
    """Sums the cross-entropy gradients of `batches` training batches into `.grad`."""
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    loader = ctx.data.train_loader(batch_size=64, shuffle=True, seed=ctx.seed)
    for i, (inputs, targets) in enumerate(loader):
        if i >= batches:
            break
        nn.functional.cross_entropy(model(inputs), targets).backward()
    model.train(was_training)


def _width(layer: nn.Module) -> int:
    return int(getattr(layer, "out_channels", getattr(layer, "out_features", 0)))

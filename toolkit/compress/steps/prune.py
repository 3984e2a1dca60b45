"""`prune`: unstructured (magnitude, random, Taylor) and structured channel pruning.

Unstructured pruning bakes zeros into plain weight tensors (no parametrisation hooks are
left behind, so export sees ordinary modules). Structured pruning removes channels for real
with Torch-Pruning's dependency graph, which keeps conv→bn→conv chains, residual additions and
flatten→linear consistent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn

from toolkit.compress.base import CompressionStep, StepContext, StepReport, register_step
from toolkit.compress.groups import CHANNELS, GroupGraph, PruningGroup, kept_units
from toolkit.compress.layers import (  # noqa: F401 - re-exported
    LAYER_TYPES,
    attention_parts,
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
from toolkit.errors import RecipeError

UNSTRUCTURED = ("magnitude", "random", "taylor")
STRUCTURED = ("l1-structured", "taylor-structured")
# Per-layer amounts a `sensitivity` step left for the next `prune` step.
PER_LAYER_ARTIFACT = "prune_per_layer"
# Set when zeros were baked into weights, so `finetune` keeps them at zero.
SPARSE_ARTIFACT = "sparse_weights"


@dataclass
class PruneParams:
    method: str = "magnitude"
    amount: Optional[float] = 0.5
    scope: Optional[str] = None
    per_layer: dict[str, float] = field(default_factory=dict)
    skip: tuple[str, ...] = ()
    batches: int = 4
    keep: dict[str, int] = field(default_factory=dict)
    round_to: int = 1


@register_step
class PruneStep(CompressionStep):
    """Removes weights (unstructured) or whole channels (structured).

    Parameters:
        method: `magnitude` (default; smallest |w| zeroed), `random` (a baseline), `taylor`
            (|w·∂L/∂w| importance, unstructured), `l1-structured` (channels with the smallest
            L1 norm removed) or `taylor-structured` (channels with the smallest Taylor
            importance removed). Structured methods really remove channels.
        amount: fraction to prune, 0 < amount < 1: of the weights for the unstructured
            methods, of each dependency group's channels (attention: heads) for the structured
            ones. Default 0.5; for structured methods given `per_layer` or `keep` and no
            `amount`, the groups they do not name are left whole. A group the amount would
            cut by zero channels is reported in the card (`groups_unchanged`).
        scope: `global` (one threshold/ranking across all layers) or `layer` (each layer to
            `amount`). Default: `global` for unstructured methods, `layer` for structured.
        per_layer: {layer name: amount} overriding `amount` for those layers (default none);
            0 leaves it whole. Structured: a layer stands for its dependency group (the
            channels coupled to its outputs through residual adds, depthwise convs, ...; see
            `edgeloop compress MODEL --list-groups`), an attention block for its heads; an
            amount that removes no channel of the group, or a group that cannot be pruned, is
            an error naming the group. A preceding `sensitivity` step may fill it.
        keep: structured only: {group or layer name: units to keep}, exact (default none).
        round_to: structured only: kept channels rounded to a multiple of this (8 or 16 suit
            XNNPACK/NEON kernels); groups narrower than it are left as they are (default 1).
        skip: layer names left untouched (default none); their groups are left whole. The
            final classifier is never structurally pruned on its output.
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
        keep = params.get("keep") or {}
        if not isinstance(keep, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 1
            for k, v in keep.items()
        ):
            raise self.error("keep", "a mapping of group name to channels (integers >= 1)", keep)
        if method not in STRUCTURED:
            for key in ("keep", "round_to"):
                if key in params:
                    raise self.error(key, f"no {key} for unstructured {method}", params[key])
        named = bool(params.get("per_layer")) or bool(keep)
        default = None if method in STRUCTURED and named else d.amount
        return PruneParams(
            method=method,
            amount=ratio(self, params, "amount", default),
            scope=scope,
            per_layer=ratio_map(self, params, "per_layer", allow_zero=True),
            skip=layer_names(self, params, "skip"),
            batches=integer(self, params, "batches", d.batches, minimum=1),
            keep=dict(keep),
            round_to=integer(self, params, "round_to", d.round_to, minimum=1, maximum=64),
        )

    def check_model(self, model: nn.Module) -> None:
        """Layer names in `skip`, `per_layer` and `keep` exist, before any work."""
        resolve_layers(self, model, "skip", self.params.skip)
        if self.params.method in STRUCTURED:
            for key in ("per_layer", "keep"):
                resolve_prunable(self, model, key, getattr(self.params, key))
        else:
            resolve_layers(self, model, "per_layer", self.params.per_layer)

    def apply(self, model: nn.Module, ctx: StepContext) -> tuple[nn.Module, StepReport]:
        p = self.params
        layers = weighted_layers(model)
        per_layer = dict(ctx.artifacts.pop(PER_LAYER_ARTIFACT, {}) or {})
        per_layer.update(p.per_layer)
        if p.method in STRUCTURED:
            resolve_prunable(self, model, "per_layer", per_layer)
        else:
            resolve_layers(self, model, "per_layer", per_layer)
        resolve_layers(self, model, "skip", p.skip)
        if p.method in ("taylor", "taylor-structured") and ctx.data is None:
            raise self.error("method", f"a dataset for {p.method} importance", None)
        before = count_params(model)
        widths = {name: _width(layer) for name, layer in layers.items()}
        figures: dict[str, Any] = {"method": p.method, "amount": p.amount, "scope": p.scope}
        if p.method in STRUCTURED:
            figures.update(prune_structured(model, ctx, p, per_layer, self))
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
    model: nn.Module, ctx: StepContext, p: PruneParams, per_layer: dict[str, float],
    step: Optional[CompressionStep] = None,
) -> dict[str, Any]:
    """Removes channels (attention: heads) group by group, in place.

    Every amount is checked against the model's dependency groups before anything is cut;
    a named group that cannot be pruned, or whose amount removes nothing, raises RecipeError
    naming it. Returns figures: `groups` {group: "before->after"} and `groups_unchanged`
    {group: why} for groups the whole-model amount left whole.
    """
    if step is None:  # called outside a recipe (sensitivity): errors name `recipe: prune.*`
        step = PruneStep.__new__(PruneStep)
        step.where, step.params = "recipe", p
    try:
        graph = GroupGraph(model, ctx.input_shape, p.skip)
    except RecipeError:
        raise
    except Exception as exc:  # noqa: BLE001 - tracing runs the user's forward
        raise RecipeError(f"prune: cannot trace the model's dependency groups with an input "
                          f"of shape {tuple(ctx.input_shape)}: {type(exc).__name__}: {exc}"
                          ) from None
    targets, unchanged = plan_structured(step, graph, p, per_layer)
    if not targets:
        why = "; ".join(f"{g}: {r}" for g, r in unchanged.items()) or "no prunable group"
        raise RecipeError(f"prune: removes no channel ({why})")
    taylor = p.method == "taylor-structured"
    was_training = model.training
    model.eval()
    if taylor:
        _accumulate_gradients(model, ctx, p.batches)
    scores = {name: graph.scores(name, taylor) for name in targets}
    if p.scope == "global" and p.amount is not None:
        targets = _global_keep(graph, scores, targets, p)
    before = {name: graph.groups[name].channels for name in targets}
    for name, keep in targets.items():
        graph.cut(name, scores[name], keep)
    model.zero_grad(set_to_none=True)
    try:
        with torch.no_grad():
            model(graph.example)
    except Exception as exc:  # noqa: BLE001 - the user's forward after the cut
        raise RecipeError(f"prune: the model no longer runs after cutting group(s) "
                          f"{', '.join(targets)}: {type(exc).__name__}: {exc}") from None
    finally:
        model.train(was_training)
    for name, why in unchanged.items():
        ctx.log(f"prune: group {name} left whole: {why}")
    return {
        "groups": {n: f"{before[n]}->{k} {graph.groups[n].unit}" for n, k in targets.items()},
        "groups_unchanged": unchanged,
        "round_to": p.round_to,
    }


def plan_structured(step: CompressionStep, graph: GroupGraph, p: PruneParams,
                    per_layer: dict[str, float]) -> tuple[dict[str, int], dict[str, str]]:
    """({group: units to keep} for the groups to cut, {group: why left whole})."""
    explicit: dict[str, int] = {}
    by_key: dict[str, str] = {}

    def claim(key: str, where: str) -> Optional[PruningGroup]:
        name = graph.group_of(key)
        if name is None:
            shown = ", ".join(g.name for g in graph.groups.values() if g.prunable)
            raise step.error(where, f"a layer of a prunable group ({shown})", key)
        group = graph.groups[name]
        if not group.prunable:
            raise RecipeError(f"{step.where}: prune.{where}: group {name} "
                              f"cannot be pruned: {group.reason}")
        if name in by_key:
            raise RecipeError(f"{step.where}: prune.{where}: group {name} is already set by "
                              f"{by_key[name]} (a group is pruned as one)")
        by_key[name] = where
        return group

    for key, amount in per_layer.items():
        group = claim(key, f"per_layer.{key}")
        if amount == 0:
            explicit[group.name] = group.channels
            continue
        keep = kept_units(group.channels, amount, _multiple(group, p))
        if keep >= group.channels:
            raise RecipeError(
                f"{step.where}: prune.per_layer.{key}: {amount:g} of group {group.name} "
                f"({group.channels} {group.unit}{_rounding(p)}) removes nothing")
        explicit[group.name] = keep
    for key, keep in p.keep.items():
        group = claim(key, f"keep.{key}")
        if not 1 <= keep < group.channels:
            raise RecipeError(f"{step.where}: prune.keep.{key}: group {group.name} has "
                              f"{group.channels} {group.unit}; expected 1 to "
                              f"{group.channels - 1} to keep, got {keep}")
        explicit[group.name] = keep
    targets = {n: k for n, k in explicit.items() if k < graph.groups[n].channels}
    unchanged: dict[str, str] = {}
    if p.amount is None:
        return targets, unchanged
    for group in graph.groups.values():
        if group.name in explicit or not group.prunable:
            continue
        keep = kept_units(group.channels, p.amount, _multiple(group, p))
        if keep >= group.channels:
            unchanged[group.name] = (f"{p.amount:g} of {group.channels} {group.unit}"
                                     f"{_rounding(p)} rounds to none")
        else:
            targets[group.name] = keep
    return targets, unchanged


def _multiple(group: PruningGroup, p: PruneParams) -> int:
    """`round_to` for channel groups; heads are counted whole."""
    return p.round_to if group.unit == CHANNELS else 1


def _rounding(p: PruneParams) -> str:
    return f", kept rounded to a multiple of {p.round_to}" if p.round_to > 1 else ""


def _global_keep(graph: GroupGraph, scores: dict[str, torch.Tensor], targets: dict[str, int],
                 p: PruneParams) -> dict[str, int]:
    """Global scope: the channel groups under the whole-model amount share one ranking (each
    keeps at least one channel, or one `round_to`); head groups and named groups keep theirs."""
    named = set(p.per_layer) | set(p.keep)
    pooled = [n for n in targets if n not in named and graph.groups[n].unit == CHANNELS]
    if not pooled:
        return targets
    flat = torch.cat([scores[n] / (scores[n].mean() + 1e-12) for n in pooled])
    cut = int(p.amount * flat.numel() + 0.5)
    threshold = torch.sort(flat).values[cut - 1] if cut else -math.inf
    out = dict(targets)
    for n in pooled:
        width = graph.groups[n].channels
        keep = int((scores[n] / (scores[n].mean() + 1e-12) > threshold).sum())
        floor = p.round_to if width >= p.round_to else 1
        if p.round_to > 1 and width >= p.round_to:
            keep = int(keep / p.round_to + 0.5) * p.round_to
        keep = max(floor, min(width, keep))
        if keep < width:
            out[n] = keep
        else:
            out.pop(n)
    return out


def resolve_prunable(step: CompressionStep, model: nn.Module, key: str,
                     names: Any) -> None:
    """Names for structured pruning: Conv/Linear layers or attention blocks of the model."""
    modules = dict(model.named_modules())
    for name in names:
        m = modules.get(name)
        if m is None or not (isinstance(m, (*LAYER_TYPES, nn.MultiheadAttention))
                             or attention_parts(m) is not None):
            shown = ", ".join(list(weighted_layers(model))[:12])
            raise step.error(key, f"layer names of the model ({shown}, ...)", name)


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

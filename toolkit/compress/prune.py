"""`prune`: unstructured (magnitude, random, Taylor) and structured channel pruning.

Unstructured pruning bakes zeros into plain weight tensors (no parametrisation hooks are
left behind, so export sees ordinary modules). Structured pruning removes channels for real
with Torch-Pruning's dependency graph, which keeps conv→bn→conv chains, residual additions and
flatten→linear consistent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any, Optional

import torch
from torch import nn

from toolkit.compress.base import CompressionStep, StepContext, StepReport, register_step

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
        scope = choice(self, params, "scope", "layer" if method in STRUCTURED else "global",
                       ("global", "layer"))
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
        ctx.log(f"prune {p.method}: {before} -> {figures['params_after']} parameters, "
                f"sparsity {figures['sparsity']:.3f}")
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


# --- Helpers shared by every step of this package: layer lookup and parameter checks. ---

LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def weighted_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Returns the Conv/Linear layers of `model` by their `named_modules` name, in order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LAYER_TYPES)}


def resolve_layers(
    step: CompressionStep,
    model: nn.Module,
    key: str,
    names: Iterable[str],
    layers: Optional[dict[str, nn.Module]] = None,
) -> dict[str, nn.Module]:
    """Looks up layer names; an unknown one raises the step's error naming `key`."""
    layers = weighted_layers(model) if layers is None else layers
    for name in names:
        if name not in layers:
            shown = ", ".join(list(layers)[:12]) + (", ..." if len(layers) > 12 else "")
            raise step.error(key, f"layer names of the model ({shown})", name)
    return {name: layers[name] for name in names}


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replaces the submodule called `name` (dotted, as in `named_modules`) by `module`."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def count_params(model: nn.Module) -> int:
    """Returns the number of parameter elements (weights and biases)."""
    return sum(p.numel() for p in model.parameters())


def sparsity(model: nn.Module) -> float:
    """Returns the fraction (0-1) of Conv/Linear weight elements that are exactly zero."""
    weights = [m.weight for m in weighted_layers(model).values()]
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / total if total else 0.0


def output_layers(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """Returns the layer whose output is the model's output (else the last weighted layer)."""
    outputs: dict[int, nn.Module] = {}
    hooks = [
        m.register_forward_hook(lambda mod, args, out: outputs.__setitem__(id(out), mod))
        for m in weighted_layers(model).values()
    ]
    try:
        with torch.no_grad():
            result = model(example)
    finally:
        for hook in hooks:
            hook.remove()
    if id(result) in outputs:
        return [outputs[id(result)]]
    layers = list(weighted_layers(model).values())
    return layers[-1:]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_known(step: CompressionStep, params: dict[str, Any], params_cls: type) -> None:
    """Raises the step's error for a parameter name the dataclass `params_cls` does not have."""
    known = [f.name for f in fields(params_cls)]
    for key in params:
        if key not in known:
            raise step.error(str(key), f"one of the parameters {', '.join(known)}", key)


def ratio(
    step: CompressionStep,
    params: dict[str, Any],
    key: str,
    default: Optional[float],
    include_high: bool = False,
    include_low: bool = False,
) -> Optional[float]:
    """Reads a fraction, 0 < x < 1 (bounds included when asked); None if absent and no default."""
    value = params.get(key, default)
    if value is None and default is None:
        return None
    low_ok = _is_number(value) and (value >= 0 if include_low else value > 0)
    if not (low_ok and (value <= 1 if include_high else value < 1)):
        low, high = ("0 <=" if include_low else "0 <"), ("<= 1" if include_high else "< 1")
        raise step.error(key, f"a number with {low} x {high}", value)
    return float(value)


def number(
    step: CompressionStep, params: dict[str, Any], key: str, default: float, minimum: float = 0.0
) -> float:
    """Reads a number strictly greater than `minimum`."""
    value = params.get(key, default)
    if not (_is_number(value) and value > minimum):
        raise step.error(key, f"a number > {minimum:g}", value)
    return float(value)


def integer(
    step: CompressionStep,
    params: dict[str, Any],
    key: str,
    default: int,
    minimum: int = 1,
    maximum: Optional[int] = None,
) -> int:
    """Reads an integer in [minimum, maximum]."""
    value = params.get(key, default)
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    if not ok or (maximum is not None and value > maximum):
        bound = f" and <= {maximum}" if maximum is not None else ""
        raise step.error(key, f"an integer >= {minimum}{bound}", value)
    return int(value)


def choice(
    step: CompressionStep, params: dict[str, Any], key: str, default: Any, options: Iterable[Any]
) -> Any:
    """Reads one of `options`."""
    options = tuple(options)
    value = params.get(key, default)
    if value not in options or isinstance(value, bool) != isinstance(default, bool):
        raise step.error(key, "one of " + ", ".join(str(o) for o in options), value)
    return value


def layer_names(step: CompressionStep, params: dict[str, Any], key: str) -> tuple[str, ...]:
    """Reads an optional list of layer names (names are checked against the model in apply)."""
    value = params.get(key)
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise step.error(key, "a list of layer names", value)
    return tuple(value)


def ratio_map(
    step: CompressionStep, params: dict[str, Any], key: str, allow_zero: bool = False
) -> dict[str, float]:
    """Reads an optional {layer name: fraction} mapping (0 < x < 1; 0 allowed when asked)."""
    value = params.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise step.error(key, "a mapping of layer name to amount", value)
    amounts = {}
    for name, amount in value.items():
        where = f"{key}.{name}"
        amounts[name] = float(ratio(step, {where: amount}, where, 0.0, include_low=allow_zero))
    return amounts

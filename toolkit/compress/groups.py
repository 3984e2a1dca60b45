"""Dependency groups: the unit of structured pruning.

Channels that must go together — through a residual add, a depthwise conv, a squeeze-excite
multiply, a concat, a flatten into a linear layer — form one group, found with Torch-Pruning's
`DependencyGraph` and named by its leading layer (the first of its layers in the model's
`named_modules` order). Attention blocks form groups of their own whose unit is the head:
removing a head removes its q/k/v rows and its columns of the output projection and lowers
`num_heads`. `nn.MultiheadAttention` is first replaced by the equivalent `HeadAttention` (its
inner width is tied to the model width), so heads and the model width can each be pruned.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Optional

import torch
from torch import nn

from toolkit.compress.layers import (
    LAYER_TYPES,
    HeadAttention,
    attention_parts,
    head_scores,
    output_layers,
    remove_heads,
    set_module,
)
from toolkit.errors import RecipeError

CHANNELS, HEADS = "channels", "heads"


@dataclass(frozen=True)
class PruningGroup:
    """Channels (or attention heads) that are pruned together.

    Attributes:
        name: the leading layer's module name (the attention block's for head groups).
        unit: `channels` or `heads`.
        channels: how many units the group has now.
        layers: module names whose weights the group cuts (producers and consumers).
        prunable: whether structured pruning may shrink it.
        reason: why not, when it is not prunable (empty otherwise).
    """

    name: str
    unit: str
    channels: int
    layers: tuple[str, ...]
    prunable: bool = True
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["layers"] = list(self.layers)
        return data

    def describe(self) -> str:
        """One line, e.g. `stem.0  16 channels  (6 layers)` or `... not prunable: why`."""
        text = f"{self.name}  {self.channels} {self.unit}  ({len(self.layers)} layers)"
        return text if self.prunable else f"{text}  not prunable: {self.reason}"


class AttentionPruner:
    """Torch-Pruning's view of an attention block: one leaf whose input width is its q/k/v
    projections' inputs and whose output width is its output projection's outputs."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:  # built lazily on torch_pruning's base
        import torch_pruning as tp

        class _Pruner(tp.pruner.function.BasePruningFunc):
            def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
                parts = attention_parts(layer)
                _cut_linear(layer, parts["out"], idxs, dim=0)
                return layer

            def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
                parts = attention_parts(layer)
                for key in ("qkv", "q", "k", "v"):
                    if key in parts:
                        _cut_linear(layer, parts[key], idxs, dim=1)
                return layer

            def get_out_channels(self, layer: nn.Module) -> int:
                return getattr(layer, attention_parts(layer)["out"]).out_features

            def get_in_channels(self, layer: nn.Module) -> int:
                parts = attention_parts(layer)
                return getattr(layer, parts.get("qkv") or parts["q"]).in_features

        return _Pruner()


def _cut_linear(parent: nn.Module, name: str, idxs: Sequence[int], dim: int) -> None:
    layer: nn.Linear = getattr(parent, name)
    size = layer.weight.shape[dim]
    keep = torch.tensor(sorted(set(range(size)) - {int(i) for i in idxs}), dtype=torch.long)
    with torch.no_grad():
        layer.weight = nn.Parameter(layer.weight.detach().index_select(dim, keep).contiguous())
        if dim == 0 and layer.bias is not None:
            layer.bias = nn.Parameter(layer.bias.detach()[keep].contiguous())
    if dim == 0:
        layer.out_features = len(keep)
    else:
        layer.in_features = len(keep)


def convert_attention(model: nn.Module) -> list[str]:
    """Replaces every `nn.MultiheadAttention` by the equivalent `HeadAttention`, in place.

    Returns the names of the replaced modules. A block that cannot be converted is left as
    it is (its group then says why it cannot be pruned).
    """
    replaced = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.MultiheadAttention):
            try:
                set_module(model, name, HeadAttention.from_multihead(module))
            except NotImplementedError:
                continue
            replaced.append(name)
    return replaced


class GroupGraph:
    """The groups of one model, and how to cut them (the model is changed in place).

    Args:
        model: the model; its `nn.MultiheadAttention` blocks are replaced by `HeadAttention`.
        input_shape: one input's shape with the batch dimension.
        skip: layer names whose groups are left whole.
    """

    def __init__(self, model: nn.Module, input_shape: Sequence[int],
                 skip: Sequence[str] = ()) -> None:
        import torch_pruning as tp

        self.model = model
        self.example = torch.randn(*input_shape)
        convert_attention(model)
        names = {m: n for n, m in model.named_modules()}
        order = {n: i for i, n in enumerate(names.values())}
        self.attention = {n: (m, parts) for n, m in model.named_modules()
                          if (parts := attention_parts(m)) is not None}
        pruners = {type(m): AttentionPruner() for m, _ in self.attention.values()}
        was_training = model.training
        model.eval()
        try:
            outputs = set(output_layers(model, self.example))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.dg = tp.DependencyGraph().build_dependency(
                    model, example_inputs=self.example, customized_pruners=pruners)
        finally:
            model.train(was_training)
        skipped = {model.get_submodule(n) for n in skip}
        self.groups: dict[str, PruningGroup] = {}
        self.roots: dict[str, nn.Module] = {}
        self.member_of: dict[str, str] = {}  # layer name -> group name
        inside_attention = {id(sub) for m, _ in self.attention.values() for sub in m.modules()
                            if sub is not m}
        for group in self.dg.get_all_groups(root_module_types=LAYER_TYPES + tuple(pruners)):
            root = group[0].dep.target.module
            if id(root) in inside_attention:
                continue
            producers = [d.target.module for d, _ in group
                         if self.dg.is_out_channel_pruning_fn(d.handler)
                         and isinstance(d.target.module, nn.Module)]
            members = [d.target.module for d, _ in group if isinstance(d.target.module, nn.Module)]
            layer_names = sorted({names[m] for m in members if m in names}, key=order.__getitem__)
            leads = [names[m] for m in producers
                     if m in names and isinstance(m, LAYER_TYPES + tuple(pruners))]
            if not leads:
                continue
            name = min(leads, key=order.__getitem__)
            reason = ""
            if outputs & set(producers):
                reason = "its channels are the model's output"
            elif skipped & set(producers):
                reason = "a layer of it is in skip"
            elif any(isinstance(m, nn.Conv2d | nn.Conv1d | nn.Conv3d) and 1 < m.groups
                     and m.groups != m.out_channels for m in members):
                reason = "it feeds a grouped convolution"
            width = self.dg.get_out_channels(root)
            if not reason and width <= 1:
                reason = "it has one channel"
            self.groups[name] = PruningGroup(name, CHANNELS, int(width), tuple(layer_names),
                                             not reason, reason)
            self.roots[name] = root
            for m in producers:  # a layer's own amount means its output channels: this group
                if m in names:
                    self.member_of.setdefault(names[m], name)
        for name, (module, parts) in self.attention.items():
            reason = "" if module.num_heads > 1 else "it has one head"
            if module in skipped or any(f"{name}.{p}" in skip for p in parts.values()):
                reason = "a layer of it is in skip"
            layer_names = tuple(f"{name}.{p}" for p in parts.values())
            self.groups[name] = PruningGroup(name, HEADS, module.num_heads, layer_names,
                                             not reason, reason)
        ordered = sorted(self.groups, key=lambda n: order.get(n, len(order)))
        self.groups = {n: self.groups[n] for n in ordered}
        for name, group in self.groups.items():
            if group.unit == HEADS:
                self.member_of.update({layer: name for layer in group.layers})
            self.member_of[name] = name

    def group_of(self, layer: str) -> Optional[str]:
        """The group a layer (or a group name) belongs to; None when none has it."""
        return self.member_of.get(layer)

    def scores(self, name: str, taylor: bool = False) -> torch.Tensor:
        """Importance of each unit of a group (L1 magnitude, or Taylor |w·grad|)."""
        import torch_pruning as tp

        group = self.groups[name]
        if group.unit == HEADS:
            module, parts = self.attention[name]
            return head_scores(module, parts, taylor)
        root = self.roots[name]
        fn = self.dg.get_pruner_of_module(root).prune_out_channels
        tp_group = self.dg.get_pruning_group(root, fn, list(range(group.channels)))
        imp = (tp.importance.TaylorImportance() if taylor
               else tp.importance.MagnitudeImportance(p=1))(tp_group)
        return imp.detach().float().cpu()

    def cut(self, name: str, scores: torch.Tensor, keep: int) -> int:
        """Keeps the `keep` most important units of a group; returns how many went."""
        group = self.groups[name]
        drop = torch.argsort(scores, stable=True)[: group.channels - keep].tolist()
        if not drop:
            return 0
        if group.unit == HEADS:
            module, parts = self.attention[name]
            remove_heads(module, parts, drop)
        else:
            root = self.roots[name]
            fn = self.dg.get_pruner_of_module(root).prune_out_channels
            self.dg.get_pruning_group(root, fn, sorted(drop)).prune()
        return len(drop)


def find_groups(model: nn.Module, input_shape: Sequence[int],
                skip: Sequence[str] = ()) -> list[PruningGroup]:
    """The dependency groups of `model` (left unchanged), in the model's layer order.

    Args:
        model: a float torch model.
        input_shape: one input's shape with the batch dimension, e.g. (1, 3, 32, 32).
        skip: layer names whose groups are marked not prunable.

    Raises:
        RecipeError: the model cannot be traced with an input of that shape.
    """
    try:
        return list(GroupGraph(copy.deepcopy(model), input_shape, skip).groups.values())
    except RecipeError:
        raise
    except Exception as exc:  # noqa: BLE001 - tracing runs the user's forward
        raise RecipeError(f"structured pruning: cannot trace the model with an input of shape "
                          f"{tuple(input_shape)}: {type(exc).__name__}: {exc}") from None


def group_widths(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """{group name: channels (or heads)} of the prunable groups."""
    return {g.name: g.channels for g in find_groups(model, input_shape) if g.prunable}


def kept_units(width: int, amount: float, round_to: int = 1) -> int:
    """Units a group keeps when `amount` of its `width` goes: width − round(amount·width),
    then rounded to the nearest multiple of `round_to` (at least one multiple)."""
    keep = width - int(amount * width + 0.5)
    if round_to > 1 and width >= round_to:
        keep = max(round_to, int(keep / round_to + 0.5) * round_to)
    return max(1, min(width, keep))


def group_macs(model: nn.Module, input_shape: Sequence[int]) -> dict[str, float]:
    """Multiply-accumulates one unit (channel or head) of each prunable group costs, for one
    input: each Conv/Linear layer's MACs shared evenly over the channels the group cuts in it.
    A host-side estimate NetAdapt uses to spread measured savings over unprobed groups."""
    work = copy.deepcopy(model).eval()
    graph = GroupGraph(work, input_shape)
    macs: dict[nn.Module, float] = {}

    def hook(module: nn.Module, args: Any, out: torch.Tensor) -> None:
        weight = module.weight
        macs[module] = float(out.numel() // out.shape[-1 if isinstance(module, nn.Linear) else 1]
                             * weight[0].numel() * (out.shape[-1] if isinstance(module, nn.Linear)
                                                    else out.shape[1]))

    hooks = [m.register_forward_hook(hook) for m in work.modules() if isinstance(m, LAYER_TYPES)]
    try:
        with torch.no_grad():
            work(graph.example)
    finally:
        for h in hooks:
            h.remove()
    modules = dict(work.named_modules())
    out: dict[str, float] = {}
    for name, group in graph.groups.items():
        if not group.prunable:
            continue
        total = 0.0
        for layer in group.layers:
            m = modules.get(layer)
            if m in macs:
                conv = isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d)
                if graph.member_of.get(layer) == name:  # the group cuts its outputs
                    width = m.out_channels if conv else m.out_features
                else:  # its inputs
                    width = m.in_channels if conv else m.in_features
                total += macs[m] / max(1, width) if group.unit == CHANNELS else macs[m]
        out[name] = total / (group.channels if group.unit == HEADS else 1)
    return out


def groups_report(groups: Sequence[PruningGroup], as_json: bool = False) -> str:
    """The listing `edgeloop compress MODEL --list-groups` prints (JSON with `as_json`)."""
    if as_json:
        import json

        return json.dumps({"groups": [g.to_json() for g in groups]}, indent=2)
    width = max((len(g.name) for g in groups), default=0)
    lines = [f"{len(groups)} groups, {sum(g.prunable for g in groups)} prunable "
             "(a group's channels are cut together; name it in prune.per_layer or prune.keep)"]
    for g in groups:
        line = f"  {g.name:<{width}}  {g.channels:>5} {g.unit:<8}  {len(g.layers):>3} layers"
        lines.append(line if g.prunable else f"{line}  not prunable: {g.reason}")
    return "\n".join(lines)

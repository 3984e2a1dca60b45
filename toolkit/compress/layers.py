"""Layer lookup shared by the compression steps: which layers carry weights, and by what name."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Optional

import torch
from torch import nn

from toolkit.compress.base import CompressionStep

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


# -- attention, pruned by whole heads -----------------------------------------------------------
# Names a hand-written attention block may give its projections (the first match is taken).
_Q, _K, _V = ("q", "q_proj", "query", "to_q"), ("k", "k_proj", "key", "to_k"), (
    "v", "v_proj", "value", "to_v")
_QKV, _OUT = ("qkv", "in_proj", "to_qkv"), ("out_proj", "proj", "o_proj", "out", "to_out")


class HeadAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v/out projections and a free head count.

    The drop-in for `nn.MultiheadAttention` that structured pruning installs: same call
    (`attn(q, k, v, attn_mask=..., key_padding_mask=..., need_weights=False, ...)` returning
    `(output, None)`), same arithmetic, but its inner width is `num_heads * head_dim` rather
    than the model width, so whole heads can be removed while the model width stays.

    Args:
        embed_dim: input and output width.
        num_heads: heads; `head_dim` wide each.
        head_dim: width of one head.
        batch_first: (batch, seq, feature) inputs when True, (seq, batch, feature) otherwise.
        dropout: attention-weight dropout while training.
        bias: projections carry a bias.
    """

    _qkv_same_embed_dim = False  # keeps nn.TransformerEncoderLayer off its fused fast path
    in_proj_weight = None
    in_proj_bias = None

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int, batch_first: bool = False,
                 dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        inner = num_heads * head_dim
        self.num_heads, self.head_dim = num_heads, head_dim
        self.batch_first, self.dropout = batch_first, dropout
        self.q_proj = nn.Linear(embed_dim, inner, bias=bias)
        self.k_proj = nn.Linear(embed_dim, inner, bias=bias)
        self.v_proj = nn.Linear(embed_dim, inner, bias=bias)
        self.out_proj = nn.Linear(inner, embed_dim, bias=bias)

    @property
    def embed_dim(self) -> int:
        return self.out_proj.out_features

    @classmethod
    def from_multihead(cls, mha: nn.MultiheadAttention) -> HeadAttention:
        """The same attention as `mha` (self-attention, equal q/k/v widths), weights copied."""
        if not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.add_zero_attn:
            raise NotImplementedError("only plain self-attention (kdim = vdim = embed_dim, "
                                      "no bias_k/add_zero_attn) can be pruned by heads")
        e, h = mha.embed_dim, mha.num_heads
        new = cls(e, h, e // h, mha.batch_first, mha.dropout, mha.in_proj_bias is not None)
        with torch.no_grad():
            for i, proj in enumerate((new.q_proj, new.k_proj, new.v_proj)):
                proj.weight.copy_(mha.in_proj_weight[i * e:(i + 1) * e])
                if proj.bias is not None:
                    proj.bias.copy_(mha.in_proj_bias[i * e:(i + 1) * e])
            new.out_proj.weight.copy_(mha.out_proj.weight)
            if new.out_proj.bias is not None:
                new.out_proj.bias.copy_(mha.out_proj.bias)
        return new.train(mha.training)

    def forward(self, query: torch.Tensor, key: Optional[torch.Tensor] = None,
                value: Optional[torch.Tensor] = None,
                key_padding_mask: Optional[torch.Tensor] = None, need_weights: bool = False,
                attn_mask: Optional[torch.Tensor] = None,
                average_attn_weights: bool = True, is_causal: bool = False,
                ) -> tuple[torch.Tensor, None]:
        key = query if key is None else key
        value = key if value is None else value
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        b, n, _ = query.shape
        s = key.shape[1]
        h, d = self.num_heads, self.head_dim
        q = self.q_proj(query).reshape(b, n, h, d).transpose(1, 2)
        k = self.k_proj(key).reshape(b, s, h, d).transpose(1, 2)
        v = self.v_proj(value).reshape(b, s, h, d).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-2, -1)) * (d ** -0.5)
        if is_causal and attn_mask is None:
            attn_mask = torch.ones(n, s, dtype=torch.bool, device=query.device).triu(1)
        if attn_mask is not None:
            scores = (scores.masked_fill(attn_mask, float("-inf")) if attn_mask.dtype == torch.bool
                      else scores + attn_mask)
        if key_padding_mask is not None:
            pad = key_padding_mask.view(b, 1, 1, s)
            scores = (scores.masked_fill(pad, float("-inf")) if pad.dtype == torch.bool
                      else scores + pad)
        weights = torch.softmax(scores, dim=-1)
        if self.training and self.dropout > 0:
            weights = nn.functional.dropout(weights, self.dropout)
        out = torch.matmul(weights, v).transpose(1, 2).reshape(b, n, h * d)
        out = self.out_proj(out)
        return (out if self.batch_first else out.transpose(0, 1)), None


def attention_parts(module: nn.Module) -> Optional[dict[str, Any]]:
    """The projections of an attention block prunable by heads, or None if it is not one.

    A block qualifies when it exposes integer `num_heads` and `head_dim` and holds Linear
    projections by a known name: `q`/`k`/`v` (or `q_proj`, `query`, ...) or a fused `qkv`
    (rows laid out as 3 × heads × head_dim), and an output projection (`out_proj`, `proj`, ...).
    Returns {"q": name, "k": name, "v": name} or {"qkv": name}, plus {"out": name}.
    """
    h, d = getattr(module, "num_heads", None), getattr(module, "head_dim", None)
    if not (isinstance(h, int) and isinstance(d, int)) or isinstance(module, nn.MultiheadAttention):
        return None
    children = {n: m for n, m in module.named_children() if isinstance(m, nn.Linear)}

    def pick(names: tuple[str, ...], rows: Optional[int], cols: Optional[int]) -> Optional[str]:
        for name in names:
            m = children.get(name)
            if m is not None and rows in (None, m.out_features) and cols in (None, m.in_features):
                return name
        return None

    out = pick(_OUT, None, h * d)
    fused = pick(_QKV, 3 * h * d, None)
    if out is None:
        return None
    if fused is not None:
        return {"qkv": fused, "out": out}
    q, k, v = (pick(names, h * d, None) for names in (_Q, _K, _V))
    if q is None or k is None or v is None:
        return None
    return {"q": q, "k": k, "v": v, "out": out}


def head_scores(module: nn.Module, parts: dict[str, str], taylor: bool = False) -> torch.Tensor:
    """Importance of each head: L1 norm (or |w·grad| with `taylor`) of its q/k/v rows and its
    columns of the output projection."""
    h, d = module.num_heads, module.head_dim

    def score(w: torch.Tensor) -> torch.Tensor:
        if taylor:
            return (w * w.grad).abs() if w.grad is not None else torch.zeros_like(w)
        return w.abs()

    with torch.no_grad():
        total = torch.zeros(h)
        if "qkv" in parts:
            w = getattr(module, parts["qkv"]).weight
            total += score(w).reshape(3, h, d, -1).sum(dim=(0, 2, 3))
        else:
            for key in ("q", "k", "v"):
                total += score(getattr(module, parts[key]).weight).reshape(h, d, -1).sum(dim=(1, 2))
        out = getattr(module, parts["out"]).weight
        total += score(out).reshape(out.shape[0], h, d).sum(dim=(0, 2))
    return total


def remove_heads(module: nn.Module, parts: dict[str, str], heads: Iterable[int]) -> None:
    """Removes the given heads: q/k/v output rows, output-projection columns, `num_heads`."""
    h, d = module.num_heads, module.head_dim
    drop = set(int(i) for i in heads)
    kept = [i for i in range(h) if i not in drop]
    rows = torch.tensor([i * d + j for i in kept for j in range(d)], dtype=torch.long)
    if "qkv" in parts:
        rows_qkv = torch.cat([rows + s * h * d for s in range(3)])
        _slice_linear(module, parts["qkv"], rows_qkv, None)
    else:
        for key in ("q", "k", "v"):
            _slice_linear(module, parts[key], rows, None)
    _slice_linear(module, parts["out"], None, rows)
    module.num_heads = len(kept)
    for attr in ("all_head_size", "inner_dim", "inner_size"):  # widths some blocks keep
        if isinstance(getattr(module, attr, None), int):
            setattr(module, attr, len(kept) * d)


def _slice_linear(parent: nn.Module, name: str, rows: Optional[torch.Tensor],
                  cols: Optional[torch.Tensor]) -> None:
    old: nn.Linear = getattr(parent, name)
    w = old.weight.detach()
    w = w[rows] if rows is not None else w
    w = w[:, cols] if cols is not None else w
    new = nn.Linear(w.shape[1], w.shape[0], bias=old.bias is not None)
    with torch.no_grad():
        new.weight.copy_(w)
        if old.bias is not None:
            new.bias.copy_(old.bias.detach()[rows] if rows is not None else old.bias.detach())
    setattr(parent, name, new.train(old.training))

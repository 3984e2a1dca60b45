"""`lowrank`: truncated-SVD factorisation of Linear and Conv2d layers.

A Linear `out×in` becomes Linear(in→r, no bias) then Linear(r→out); a Conv2d with `out`
filters of `in×k×k` becomes a k×k Conv2d with r filters then a 1×1 Conv2d to `out`. The
factors carry √σ each. A layer is left alone when its factorisation would not have fewer
parameters. The factorised layer becomes an `nn.Sequential` under the same name (`fc` →
`fc.0`, `fc.1`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from toolkit.compress.base import CompressionStep, StepContext, StepReport, register_step
from toolkit.compress.layers import count_params, resolve_layers, set_module
from toolkit.compress.params import check_known, layer_names, ratio


@dataclass
class LowrankParams:
    rank_ratio: Optional[float] = None
    energy: Optional[float] = None
    layers: tuple[str, ...] = ()


@register_step
class LowrankStep(CompressionStep):
    """Factorises Linear and Conv2d layers by truncated SVD.

    Parameters:
        rank_ratio: kept rank as a fraction of the full rank min(out, in·k·k), 0 < r <= 1.
        energy: kept fraction of the squared singular values, 0 < e <= 1; the smallest rank
            reaching it is used. Give `rank_ratio` or `energy`, not both (default energy 0.9).
        layers: layer names to factorise (default: every Linear and ungrouped Conv2d). A layer
            whose factorisation would not have fewer parameters is skipped and reported.
    """

    key = "lowrank"

    def validate(self, params: dict[str, Any]) -> LowrankParams:
        check_known(self, params, LowrankParams)
        rank_ratio = ratio(self, params, "rank_ratio", None, include_high=True)
        energy = ratio(self, params, "energy", None, include_high=True)
        if rank_ratio is not None and energy is not None:
            raise self.error("energy", "either rank_ratio or energy, not both", energy)
        if rank_ratio is None and energy is None:
            energy = 0.9
        return LowrankParams(rank_ratio, energy, layer_names(self, params, "layers"))

    def apply(self, model: nn.Module, ctx: StepContext) -> tuple[nn.Module, StepReport]:
        p = self.params
        candidates = factorisable_layers(model)
        layers = (
            resolve_layers(self, model, "layers", p.layers, candidates)
            if p.layers
            else (candidates)
        )
        before = count_params(model)
        ranks: dict[str, int] = {}
        skipped: dict[str, str] = {}
        for name, layer in layers.items():
            matrix = _as_matrix(layer.weight.detach())
            u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
            rank = choose_rank(s, p.rank_ratio, p.energy)
            out_dim, in_dim = matrix.shape
            if rank * (out_dim + in_dim) >= out_dim * in_dim:
                skipped[name] = f"rank {rank} would not reduce parameters"
                continue
            set_module(model, name, _factorised(layer, u, s, vh, rank))
            ranks[name] = rank
        figures = {
            "ranks": ranks,
            "skipped": skipped,
            "params_before": before,
            "params_after": count_params(model),
        }
        ctx.log(f"lowrank: {len(ranks)} layers factorised, {before} -> {figures['params_after']}")
        return model, StepReport(self.key, figures)


def factorisable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Linear layers and 2-D convolutions without groups, by name."""
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)
    }


def choose_rank(
    singular: torch.Tensor, rank_ratio: Optional[float], energy: Optional[float]
) -> int:
    """Smallest rank keeping `energy` of Σσ², or round(rank_ratio · full rank); at least 1."""
    full = len(singular)
    if rank_ratio is not None:
        return max(1, min(full, round(rank_ratio * full)))
    squares = singular.double() ** 2
    kept = torch.cumsum(squares, 0) / squares.sum().clamp(min=1e-30)
    return max(1, min(full, int((kept < (energy or 1.0) - 1e-12).sum()) + 1))


def _as_matrix(weight: torch.Tensor) -> torch.Tensor:
    return weight.reshape(weight.shape[0], -1)


def _factorised(
    layer: nn.Module, u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, rank: int
) -> nn.Sequential:
    root = s[:rank].sqrt()
    first_w = root[:, None] * vh[:rank]
    second_w = u[:, :rank] * root[None, :]
    has_bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        first = nn.Linear(layer.in_features, rank, bias=False)
        second = nn.Linear(rank, layer.out_features, bias=has_bias)
        first.weight.data.copy_(first_w)
        second.weight.data.copy_(second_w)
    else:
        first = nn.Conv2d(
            layer.in_channels,
            rank,
            layer.kernel_size,
            layer.stride,
            layer.padding,
            layer.dilation,
            bias=False,
            padding_mode=layer.padding_mode,
        )
        second = nn.Conv2d(rank, layer.out_channels, 1, bias=has_bias)
        first.weight.data.copy_(first_w.reshape(first.weight.shape))
        second.weight.data.copy_(second_w.reshape(second.weight.shape))
    if has_bias:
        second.bias.data.copy_(layer.bias.detach())
    return nn.Sequential(first, second).to(layer.weight.device)

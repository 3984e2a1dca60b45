"""`replace`: standard convolutions → depthwise-separable ones (MobileNet), then recovery.

A Conv2d(in→out, k×k) becomes a depthwise Conv2d(in→in, k×k, groups=in) followed by a
pointwise Conv2d(in→out, 1×1). The pair starts as the best such approximation of the
original filters: for each input channel i, the out×k² slice W[:, i] is replaced by its
rank-1 SVD (pointwise column × depthwise kernel). Training (`then`) recovers the rest.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from toolkit.compress.base import CompressionStep, StepContext, StepReport, register_step
from toolkit.compress.layers import count_params, resolve_layers, set_module
from toolkit.compress.params import check_known, choice, integer, layer_names, number
from toolkit.compress.steps.distill import distillation_loss
from toolkit.compress.steps.finetune import finetune
from toolkit.compress.steps.prune import SPARSE_ARTIFACT


@dataclass
class ReplaceParams:
    then: str = "finetune"
    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 64
    layers: tuple[str, ...] = ()
    include_first: bool = False


@register_step
class ReplaceStep(CompressionStep):
    """Turns k×k convolutions into depthwise k×k + pointwise 1×1 pairs.

    Parameters:
        then: `finetune` (default), `distill` (from the model before this step, T=4,
            α=0.7) or `none`.
        epochs: epochs of that training (default 3).
        lr: its learning rate (default 0.001).
        batch_size: its batch size (default 64).
        layers: conv layer names to replace (default: every ungrouped Conv2d with a kernel
            larger than 1×1 and more than one input channel).
        include_first: also replace convs with a single input channel (default false; for
            those the pair saves little).
    """

    key = "replace"

    def validate(self, params: dict[str, Any]) -> ReplaceParams:
        d = ReplaceParams()
        check_known(self, params, ReplaceParams)
        return ReplaceParams(
            then=choice(self, params, "then", d.then, ("finetune", "distill", "none")),
            epochs=integer(self, params, "epochs", d.epochs),
            lr=number(self, params, "lr", d.lr),
            batch_size=integer(self, params, "batch_size", d.batch_size),
            layers=layer_names(self, params, "layers"),
            include_first=choice(self, params, "include_first", d.include_first, (True, False)),
        )

    def apply(self, model: nn.Module, ctx: StepContext) -> tuple[nn.Module, StepReport]:
        from toolkit.models.train import accuracy

        p = self.params
        candidates = replaceable_convs(model, include_first=True)
        if p.layers:
            chosen = resolve_layers(self, model, "layers", p.layers, candidates)
        else:
            chosen = replaceable_convs(model, p.include_first)
        if p.then != "none" and ctx.data is None:
            raise self.error("then", "a dataset to train on (or then: none)", p.then)
        before = count_params(model)
        original = copy.deepcopy(model).eval() if p.then == "distill" else None
        for name, conv in chosen.items():
            set_module(model, name, depthwise_separable(conv))
        figures: dict[str, Any] = {
            "replaced": list(chosen),
            "params_before": before,
            "params_after": count_params(model),
            "then": p.then,
        }
        if ctx.data is not None:
            figures["accuracy_replaced_pct"] = round(accuracy(model, ctx.data.test_loader()), 2)
        if p.then != "none":
            loss = distillation_loss(original, 4.0, 0.7) if original is not None else None
            finetune(
                model,
                ctx.data,
                p.epochs,
                p.lr,
                p.batch_size,
                seed=ctx.seed,
                log=ctx.log,
                loss_fn=loss,
                keep_zeros=bool(ctx.artifacts.get(SPARSE_ARTIFACT)),
            )
            figures["accuracy_after_pct"] = round(accuracy(model, ctx.data.test_loader()), 2)
        ctx.log(f"replace: {len(chosen)} convs made depthwise-separable")
        return model, StepReport(self.key, figures)


def replaceable_convs(model: nn.Module, include_first: bool = False) -> dict[str, nn.Conv2d]:
    """Ungrouped Conv2d layers with a kernel above 1×1 (and >1 input channel unless asked)."""
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d)
        and m.groups == 1
        and tuple(m.kernel_size) != (1, 1)
        and (include_first or m.in_channels > 1)
    }


@torch.no_grad()
def depthwise_separable(conv: nn.Conv2d) -> nn.Sequential:
    """Returns depthwise + pointwise convs approximating `conv` (rank-1 per input channel)."""
    cin, cout = conv.in_channels, conv.out_channels
    depthwise = nn.Conv2d(
        cin,
        cin,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        groups=cin,
        bias=False,
        padding_mode=conv.padding_mode,
    )
    pointwise = nn.Conv2d(cin, cout, 1, bias=conv.bias is not None)
    slices = conv.weight.detach().permute(1, 0, 2, 3).reshape(cin, cout, -1)  # in, out, k²
    u, s, vh = torch.linalg.svd(slices, full_matrices=False)
    root = s[:, :1].sqrt()  # in, 1
    depthwise.weight.copy_((root * vh[:, 0, :]).reshape(depthwise.weight.shape))
    pointwise.weight.copy_((u[:, :, 0] * root).t().reshape(pointwise.weight.shape))
    if conv.bias is not None:
        pointwise.bias.copy_(conv.bias)
    return nn.Sequential(depthwise, pointwise).to(conv.weight.device)

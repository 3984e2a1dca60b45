"""`finetune`: a few epochs of training after a destructive step, optionally with L1 sparsity.

When the weights carry pruned zeros (an unstructured `prune` ran before), the zeros are masked
back after every optimizer step, so the sparsity the recipe asked for survives training.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from toolkit.compress.base import CompressionStep, StepContext, StepReport, register_step
from toolkit.compress.layers import sparsity, weighted_layers
from toolkit.compress.params import check_known, integer, number
from toolkit.compress.steps.prune import SPARSE_ARTIFACT

TRAIN_DEVICE = re.compile(r"cpu|cuda(:\d+)?")
"""Where `finetune` may train: the CPU or a CUDA device."""


@dataclass
class FinetuneParams:
    epochs: int = 2
    lr: float = 1e-3
    batch_size: int = 64
    l1: float = 0.0
    keep_zeros: Any = "auto"
    device: str = "cpu"


@register_step
class FinetuneStep(CompressionStep):
    """Trains the current model on the dataset's training split (Adam, cross-entropy).

    Parameters:
        epochs: passes over the training split (default 2).
        lr: learning rate (default 0.001).
        batch_size: samples per batch (default 64).
        l1: λ of an L1 penalty λ·Σ|w| on Conv/Linear weights, pushing weights to zero
            (default 0, none).
        keep_zeros: `auto` (default: keep weights at zero when an unstructured prune ran
            before), `true` or `false`.
        device: `cpu` (default), `cuda` or `cuda:N`: where to train. The model comes back on
            the CPU. With `tune --executor ray`, a `cuda` fine-tune asks Ray for a GPU.
    """

    key = "finetune"
    refuse_after = {
        "cluster": "fine-tuning after cluster undoes the weight sharing; "
        "use cluster.finetune_epochs instead",
    }

    def validate(self, params: dict[str, Any]) -> FinetuneParams:
        d = FinetuneParams()
        check_known(self, params, FinetuneParams)
        l1 = params.get("l1", d.l1)
        if not (isinstance(l1, (int, float)) and not isinstance(l1, bool) and l1 >= 0):
            raise self.error("l1", "a number >= 0", l1)
        keep = params.get("keep_zeros", d.keep_zeros)
        if not (keep == "auto" or isinstance(keep, bool)):
            raise self.error("keep_zeros", "auto, true or false", keep)
        device = params.get("device", d.device)
        if not (isinstance(device, str) and TRAIN_DEVICE.fullmatch(device)):
            raise self.error("device", "cpu, cuda or cuda:N", device)
        return FinetuneParams(
            device=device,
            epochs=integer(self, params, "epochs", d.epochs, minimum=1),
            lr=number(self, params, "lr", d.lr),
            batch_size=integer(self, params, "batch_size", d.batch_size),
            l1=float(l1),
            keep_zeros=keep,
        )

    def apply(self, model: nn.Module, ctx: StepContext) -> tuple[nn.Module, StepReport]:
        from toolkit.models.train import accuracy

        p = self.params
        if ctx.data is None:
            raise self.error("epochs", "a dataset to train on", None)
        keep = bool(ctx.artifacts.get(SPARSE_ARTIFACT)) if p.keep_zeros == "auto" else p.keep_zeros
        if p.device != "cpu" and not torch.cuda.is_available():
            raise self.error("device", "a CUDA device on this host (torch sees none)", p.device)
        before = accuracy(model, ctx.data.test_loader())
        losses = finetune(
            model, ctx.data, p.epochs, p.lr, p.batch_size, p.l1, keep, ctx.seed, ctx.log, p.device
        )
        figures = {
            "epochs": p.epochs,
            "lr": p.lr,
            "l1": p.l1,
            "kept_zeros": keep,
            "train_loss_last": round(losses[-1], 5),
            "accuracy_before_pct": round(before, 2),
            "accuracy_after_pct": round(accuracy(model, ctx.data.test_loader()), 2),
            "sparsity": round(sparsity(model), 4),
        }
        return model, StepReport(self.key, figures)


def finetune(
    model: nn.Module,
    data: Any,
    epochs: int = 2,
    lr: float = 1e-3,
    batch_size: int = 64,
    l1: float = 0.0,
    keep_zeros: bool = False,
    seed: int = 0,
    log: Optional[Callable[[str], None]] = None,
    device: str = "cpu",
    loss_fn: Optional[Callable[..., torch.Tensor]] = None,
    after_step: Optional[Callable[[nn.Module], None]] = None,
) -> list[float]:
    """Trains `model` in place and returns the mean loss per epoch.

    Args:
        model: the module to train.
        data: a `toolkit.data.Dataset`.
        epochs: passes over the training split. Default 2.
        lr: Adam learning rate. Default 1e-3.
        batch_size: samples per batch. Default 64.
        l1: λ of the L1 penalty on Conv/Linear weights. Default 0.
        keep_zeros: re-apply the zero pattern the weights have now after every step.
        seed: seeds shuffling and training. Default 0.
        log: receives one line per epoch.
        loss_fn: `(outputs, inputs, targets) -> loss` replacing cross-entropy (distillation).
        after_step: called with the model after every optimizer step (after the zero mask).
        device: where to train ("cpu", "cuda", "cuda:N"); the model is back on the CPU after.
    """
    from toolkit.models.train import train_epochs

    model.to(device)  # first: the zero masks and L1 weights below are taken where it trains
    try:
        weights = [m.weight for m in weighted_layers(model).values()]
        callbacks = [c for c in (zero_keeper(model) if keep_zeros else None, after_step) if c]

        def after(trained: nn.Module) -> None:
            for callback in callbacks:
                callback(trained)

        def l1_penalty(_: nn.Module) -> torch.Tensor:
            return l1 * sum(w.abs().sum() for w in weights)

        return train_epochs(
            model,
            data.train_loader(batch_size=batch_size, shuffle=True, seed=seed),
            epochs=epochs,
            lr=lr,
            loss_fn=loss_fn,
            extra_loss=l1_penalty if l1 > 0 else None,
            after_step=after if callbacks else None,
            seed=seed,
            log=log,
            device=device,
        )
    finally:
        model.to("cpu")


def zero_keeper(model: nn.Module) -> Callable[[nn.Module], None]:
    """Returns a callback that sets the weights that are zero now back to zero."""
    masks = [(m.weight, m.weight != 0) for m in weighted_layers(model).values()]

    def reapply(_: nn.Module) -> None:
        with torch.no_grad():
            for weight, mask in masks:
                weight.mul_(mask)

    return reapply

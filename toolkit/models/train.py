"""Training and evaluation loops shared by reference models, finetune, distill and QAT."""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import torch
from torch import nn
from torch.utils.data import DataLoader

from toolkit.quality import accuracy_pct

# (outputs, inputs, targets) -> scalar loss; the default is cross-entropy on targets.
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _default_loss(
    outputs: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    return nn.functional.cross_entropy(outputs, targets)


def set_mode(model: nn.Module, training: bool) -> None:
    """Puts `model` in train or eval mode; torch.export graphs that refuse it are left as is."""
    try:
        model.train(training)
    except (NotImplementedError, RuntimeError):
        pass  # an exported graph: its mode was fixed when it was exported


def train_epochs(
    model: nn.Module,
    loader: DataLoader,
    epochs: int = 1,
    lr: float = 1e-3,
    *,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    loss_fn: Optional[LossFn] = None,
    extra_loss: Optional[Callable[[nn.Module], torch.Tensor]] = None,
    after_step: Optional[Callable[[nn.Module], None]] = None,
    seed: Optional[int] = None,
    log: Optional[Callable[[str], None]] = None,
    device: str = "cpu",
) -> list[float]:
    """Trains `model` in place and returns the mean loss of each epoch.

    Args:
        model: the module to train (left in eval mode afterwards).
        loader: yields (inputs, integer targets) batches.
        epochs: passes over `loader`; 0 trains nothing. Default 1.
        lr: learning rate. Default 1e-3.
        optimizer: `adam` (default) or `sgd` (momentum 0.9).
        weight_decay: L2 penalty passed to the optimizer. Default 0.
        loss_fn: `(outputs, inputs, targets) -> loss`; default cross-entropy on targets
            (distillation passes its own to mix in the teacher's soft targets).
        extra_loss: `model -> loss` added to each batch's loss (e.g. an L1 sparsity term).
        after_step: called with the model after every optimizer step (e.g. to re-apply masks).
        seed: seeds torch before training when given, for repeatable runs.
        log: receives one line per epoch.
        device: where the model is; each batch is moved there ("cpu" by default).

    Returns:
        The mean training loss per epoch, in order.
    """
    if seed is not None:
        torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    if epochs <= 0 or not params:
        set_mode(model, False)
        return []
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            params, lr=lr, momentum=0.9, weight_decay=weight_decay
        )
    elif optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    else:
        raise ValueError(f"optimizer: expected 'adam' or 'sgd', got {optimizer!r}")
    loss_fn = loss_fn or _default_loss
    losses = []
    for epoch in range(epochs):
        set_mode(model, True)
        total, batches = 0.0, 0
        for inputs, targets in loader:
            if device != "cpu":
                inputs, targets = inputs.to(device), targets.to(device)
            opt.zero_grad()
            outputs = model(inputs)
            loss = loss_fn(outputs, inputs, targets)
            if extra_loss is not None:
                loss = loss + extra_loss(model)
            loss.backward()
            opt.step()
            if after_step is not None:
                after_step(model)
            total += float(loss.detach())
            batches += 1
        losses.append(total / max(1, batches))
        if log is not None:
            log(f"epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f}")
    set_mode(model, False)
    return losses


@torch.no_grad()
def predict(model: nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Returns the model's outputs (logits) for `inputs`, computed in eval mode in batches."""
    was_training = getattr(model, "training", False)
    set_mode(model, False)
    outputs = [model(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]
    if was_training:
        set_mode(model, True)
    return torch.cat(outputs)


@torch.no_grad()
def accuracy(model: nn.Module, loader: DataLoader) -> float:
    """Returns top-1 accuracy in percent (0-100) of `model` on `loader`, in eval mode."""
    was_training = getattr(model, "training", False)
    set_mode(model, False)
    outputs, labels = [], []
    for inputs, targets in loader:
        outputs.append(model(inputs))
        labels.append(targets)
    if was_training:
        set_mode(model, True)
    if not labels:
        return 0.0
    return accuracy_pct(torch.cat(outputs), torch.cat(labels))

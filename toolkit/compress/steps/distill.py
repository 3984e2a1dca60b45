"""`distill`: knowledge distillation from a teacher into a smaller student (Hinton et al.).

loss = α · T² · KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α) · CE(s, y).
The student is a narrower copy of the teacher (`width`), a bundled model (`student`), or,
with neither, the current model (e.g. recovering a pruned model from the original).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from toolkit.compress.base import CompressionStep, StepContext, StepReport, register_step
from toolkit.compress.layers import count_params, output_layers
from toolkit.compress.params import check_known, choice, integer, number, ratio
from toolkit.compress.steps.finetune import finetune
from toolkit.compress.steps.prune import SPARSE_ARTIFACT


@dataclass
class DistillParams:
    temperature: float = 4.0
    alpha: float = 0.7
    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 64
    width: Optional[float] = None
    student: Optional[str] = None
    init: str = "inherit"
    teacher: str = "original"


@register_step
class DistillStep(CompressionStep):
    """Trains a student on the teacher's softened outputs plus the true labels.

    Parameters:
        temperature: T, softening of both distributions (default 4.0).
        alpha: weight of the soft (teacher) loss, 0-1; the hard-label loss gets 1 − alpha
            (default 0.7). The soft loss is scaled by T².
        epochs: training epochs (default 5).
        lr: learning rate (default 0.001).
        batch_size: samples per batch (default 64).
        width: width multiplier 0 < w < 1: the student is the teacher with every hidden layer
            narrowed to w of its channels/features (the classifier output is kept).
        student: a bundled model name (e.g. `digits-mlp`) to use as the student.
            Give `width` or `student`; with neither the current model is the student.
        init: `inherit` (default: a `width` student keeps the teacher's largest-L1 channels,
            a `student` keeps its trained weights) or `random` (fresh initialisation).
        teacher: `original` (default: the model before the recipe) or `current`.
    """

    key = "distill"

    def validate(self, params: dict[str, Any]) -> DistillParams:
        d = DistillParams()
        check_known(self, params, DistillParams)
        student = params.get("student")
        if student is not None and not isinstance(student, str):
            raise self.error("student", "a bundled model name such as digits-mlp", student)
        width = ratio(self, params, "width", None)
        if width is not None and student is not None:
            raise self.error("width", "either width or student, not both", width)
        teacher = choice(self, params, "teacher", d.teacher, ("original", "current"))
        if teacher == "current" and width is None and student is None:
            raise self.error("teacher", "original when the current model is the student", teacher)
        return DistillParams(
            temperature=number(self, params, "temperature", d.temperature),
            alpha=ratio(self, params, "alpha", d.alpha, include_low=True, include_high=True),
            epochs=integer(self, params, "epochs", d.epochs),
            lr=number(self, params, "lr", d.lr),
            batch_size=integer(self, params, "batch_size", d.batch_size),
            width=width,
            student=student,
            init=choice(self, params, "init", d.init, ("inherit", "random")),
            teacher=teacher,
        )

    def apply(self, model: nn.Module, ctx: StepContext) -> tuple[nn.Module, StepReport]:
        from toolkit.models.train import accuracy

        p = self.params
        if ctx.data is None:
            raise self.error("epochs", "a dataset to train on", None)
        teacher = ctx.teacher if p.teacher == "original" and ctx.teacher is not None else model
        if p.width is not None:
            student = narrower_copy(teacher, p.width, ctx.input_shape, p.init, ctx.seed)
        elif p.student is not None:
            from toolkit.models import load_model

            student = load_model(p.student).module
            if p.init == "random":
                _reinitialise(student, ctx.seed)
        else:
            student = model
        if student is teacher:
            teacher = copy.deepcopy(teacher)
        teacher.eval()
        # A pruned current model keeps its zeros while it learns from the teacher.
        keep_zeros = student is model and bool(ctx.artifacts.get(SPARSE_ARTIFACT))
        losses = finetune(
            student,
            ctx.data,
            p.epochs,
            p.lr,
            p.batch_size,
            keep_zeros=keep_zeros,
            seed=ctx.seed,
            log=ctx.log,
            loss_fn=distillation_loss(teacher, p.temperature, p.alpha),
        )
        figures = {
            "student": p.student or (f"width {p.width}" if p.width else "current model"),
            "temperature": p.temperature,
            "alpha": p.alpha,
            "epochs": p.epochs,
            "teacher_params": count_params(teacher),
            "student_params": count_params(student),
            "teacher_accuracy_pct": round(accuracy(teacher, ctx.data.test_loader()), 2),
            "student_accuracy_pct": round(accuracy(student, ctx.data.test_loader()), 2),
            "train_loss_last": round(losses[-1], 5),
        }
        return student, StepReport(self.key, figures)


def distillation_loss(
    teacher: nn.Module, temperature: float, alpha: float
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """Returns `(student outputs, inputs, targets) -> loss` mixing soft and hard targets."""

    def loss(outputs: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            soft_targets = torch.softmax(teacher(inputs) / temperature, dim=1)
        soft = nn.functional.kl_div(
            torch.log_softmax(outputs / temperature, dim=1), soft_targets, reduction="batchmean"
        )
        hard = nn.functional.cross_entropy(outputs, targets)
        return alpha * temperature**2 * soft + (1 - alpha) * hard

    return loss


def narrower_copy(
    model: nn.Module,
    width: float,
    input_shape: tuple[int, ...],
    init: str = "inherit",
    seed: int = 0,
) -> nn.Module:
    """Returns a copy of `model` with every hidden layer at `width` of its channels/features.

    Channels are removed through Torch-Pruning's dependency graph, so any architecture it can
    trace works (Sequential stacks, the reference models, residual blocks); the classifier's
    outputs are kept. `init="random"` re-initialises every layer afterwards.
    """
    import torch_pruning as tp

    student = copy.deepcopy(model).eval()
    example = torch.randn(*input_shape)
    pruner = tp.pruner.MetaPruner(
        student,
        example,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=1.0 - width,
        ignored_layers=output_layers(student, example),
    )
    pruner.step()
    if init == "random":
        _reinitialise(student, seed)
    return student


def _reinitialise(model: nn.Module, seed: int) -> None:
    torch.manual_seed(seed)
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()

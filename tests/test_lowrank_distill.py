"""Low-rank factorisation and distillation on the real digits data."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from toolkit.compress.base import StepContext
from toolkit.compress.steps.distill import DistillStep, distillation_loss, narrower_copy
from toolkit.compress.steps.lowrank import LowrankStep, choose_rank
from toolkit.compress.steps.prune import PruneStep, count_params, sparsity
from toolkit.errors import RecipeError
from toolkit.models.train import accuracy


def context(data, teacher=None) -> StepContext:
    return StepContext(data=data, input_shape=(1, 1, 8, 8), teacher=teacher)


def test_lowrank_by_energy_reduces_params_within_one_point(digits, digits_cnn):
    model = copy.deepcopy(digits_cnn)
    model, report = LowrankStep({"energy": 0.9}).apply(model, context(digits))
    assert report.figures["params_after"] == count_params(model) < count_params(digits_cnn)
    assert isinstance(model.classifier[0], nn.Sequential)  # 512→128 became 512→r→128
    rank = report.figures["ranks"]["classifier.0"]
    assert model.classifier[0][0].out_features == rank < 128
    base = accuracy(digits_cnn, digits.test_loader())
    assert accuracy(model, digits.test_loader()) >= base - 1.0


def test_lowrank_skips_layers_it_cannot_shrink(digits, digits_cnn):
    model = copy.deepcopy(digits_cnn)
    # The first conv (16 filters of 1x3x3) has full rank 9: rank 9 would add parameters.
    model, report = LowrankStep({"rank_ratio": 1.0}).apply(model, context(digits))
    assert "features.0" in report.figures["skipped"]
    assert isinstance(model.features[0], nn.Conv2d)


def test_lowrank_reproduces_a_low_rank_linear_and_conv_exactly(digits):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 32, 3, padding=1), nn.Flatten(), nn.Linear(32 * 64, 64))
    with torch.no_grad():  # rank-3 conv filters and a rank-4 linear weight
        model[0].weight.copy_((torch.randn(32, 3) @ torch.randn(3, 8 * 9)).view(32, 8, 3, 3))
        model[2].weight.copy_(torch.randn(64, 4) @ torch.randn(4, 32 * 64) / 50)
    x = torch.randn(4, 8, 8, 8)
    expected = model(x)
    ctx = StepContext(data=None, input_shape=(1, 8, 8, 8))
    model, report = LowrankStep({"energy": 0.99999}).apply(model, ctx)
    assert report.figures["ranks"] == {"0": 3, "2": 4}
    assert model[0][1].kernel_size == (1, 1) and model[0][0].out_channels == 3
    torch.testing.assert_close(model(x), expected, atol=1e-4, rtol=1e-4)


def test_choose_rank_by_energy_and_ratio():
    singular = torch.tensor([3.0, 2.0, 1.0, 0.0])
    assert choose_rank(singular, None, 9 / 14) == 1
    assert choose_rank(singular, None, 0.9) == 2
    assert choose_rank(singular, None, 1.0) == 3
    assert choose_rank(singular, 0.5, None) == 2


def test_distill_width_half_student_reaches_95_percent(digits, digits_cnn):
    model = copy.deepcopy(digits_cnn)
    step = DistillStep({"width": 0.5, "epochs": 5, "temperature": 4, "alpha": 0.7})
    student, report = step.apply(model, context(digits, teacher=digits_cnn))
    assert student.features[0].out_channels == 8 and student.features[3].out_channels == 16
    assert student.classifier[2].out_features == 10
    assert count_params(student) < 0.3 * count_params(digits_cnn)
    assert report.figures["student_accuracy_pct"] == pytest.approx(
        accuracy(student, digits.test_loader()), abs=0.01
    )
    assert report.figures["student_accuracy_pct"] >= 95.0


def test_distill_recovers_a_pruned_current_model(digits, digits_cnn):
    ctx = context(digits, teacher=digits_cnn)
    model, _ = PruneStep({"method": "l1-structured", "amount": 0.6}).apply(
        copy.deepcopy(digits_cnn), ctx
    )
    pruned_accuracy = accuracy(model, digits.test_loader())
    student, report = DistillStep({"epochs": 3}).apply(model, ctx)
    assert student is model
    assert report.figures["student_accuracy_pct"] >= max(95.0, pruned_accuracy)


def test_distill_keeps_the_zeros_of_an_unstructured_pruned_student(digits, digits_cnn):
    ctx = context(digits, teacher=digits_cnn)
    model, _ = PruneStep({"amount": 0.7}).apply(copy.deepcopy(digits_cnn), ctx)
    student, _ = DistillStep({"epochs": 1}).apply(model, ctx)
    assert sparsity(student) == pytest.approx(0.7, abs=1e-3)


def test_distillation_loss_mixes_soft_and_hard_terms():
    torch.manual_seed(0)
    teacher = nn.Linear(4, 3)
    inputs, targets = torch.randn(8, 4), torch.randint(0, 3, (8,))
    same = teacher(inputs).detach()
    hard = nn.functional.cross_entropy(same, targets)
    # Student equal to teacher: the soft term vanishes, only (1 - α)·CE is left.
    assert float(distillation_loss(teacher, 4.0, 0.7)(same, inputs, targets)) == pytest.approx(
        0.3 * float(hard), rel=1e-5
    )
    other = torch.randn(8, 3)
    t = 2.0
    kl = nn.functional.kl_div(
        torch.log_softmax(other / t, 1), torch.softmax(same / t, 1), reduction="batchmean"
    )
    value = distillation_loss(teacher, t, 1.0)(other, inputs, targets)
    assert float(value) == pytest.approx(t * t * float(kl), rel=1e-5)


class ResidualNet(nn.Module):
    """stem conv-bn-relu, conv-bn-relu-conv-bn added to the stem's output, linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.conv1, self.bn1 = nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.head = nn.Linear(16 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return self.head(torch.flatten(torch.relu(x + y), 1))


def test_narrower_copy_of_a_residual_model_runs():
    torch.manual_seed(0)
    teacher = ResidualNet()
    student = narrower_copy(teacher, 0.5, (1, 1, 8, 8))
    assert student.conv1.out_channels == 8 and student.stem[0].out_channels == 8
    assert student(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert teacher.conv1.out_channels == 16


@pytest.mark.parametrize(
    ("cls", "params", "named"),
    [
        (LowrankStep, {"energy": 0}, "lowrank.energy: expected a number with 0 < x <= 1"),
        (LowrankStep, {"rank_ratio": 1.5}, "lowrank.rank_ratio"),
        (LowrankStep, {"rank_ratio": 0.5, "energy": 0.9}, "lowrank.energy: expected either"),
        (LowrankStep, {"layers": "fc"}, "lowrank.layers: expected a list"),
        (DistillStep, {"temperature": 0}, "distill.temperature: expected a number > 0"),
        (DistillStep, {"alpha": 1.2}, "distill.alpha"),
        (DistillStep, {"width": 0.5, "student": "digits-mlp"}, "distill.width: expected either"),
        (DistillStep, {"teacher": "current"}, "distill.teacher"),
        (DistillStep, {"T": 4}, "distill.T: expected one of the parameters"),
    ],
)
def test_bad_params_fail_naming_the_key(cls, params, named):
    with pytest.raises(RecipeError, match=named.replace(".", r"\.")):
        cls(params)


def test_lowrank_unknown_layer_fails_naming_the_key(digits, digits_cnn):
    model = copy.deepcopy(digits_cnn)
    with pytest.raises(RecipeError, match=r"lowrank\.layers: expected layer names"):
        LowrankStep({"layers": ["fc9"]}).apply(model, context(digits))
    assert count_params(model) == count_params(digits_cnn)

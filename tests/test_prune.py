"""Pruning and fine-tuning on the real digits data: parameters really go, sparsity is exact."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from toolkit.compress.base import StepContext
from toolkit.compress.steps.finetune import FinetuneStep
from toolkit.compress.steps.prune import PruneStep, count_params, sparsity, weighted_layers
from toolkit.errors import RecipeError
from toolkit.models.train import accuracy


def context(data, model=None) -> StepContext:
    return StepContext(data=data, input_shape=(1, 1, 8, 8), teacher=model)


class ResidualNet(nn.Module):
    """stem conv-bn, one residual block (conv-bn-relu-conv-bn + identity), linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.conv1 = nn.Conv2d(16, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.head = nn.Linear(16 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return self.head(torch.flatten(torch.relu(x + y), 1))


@pytest.mark.parametrize("method", ["magnitude", "random", "taylor"])
def test_unstructured_pruning_reaches_the_requested_sparsity(digits, digits_cnn, method):
    model = copy.deepcopy(digits_cnn)
    model, report = PruneStep({"method": method, "amount": 0.6}).apply(model, context(digits))
    total = sum(m.weight.numel() for m in weighted_layers(model).values())
    assert sparsity(model) == pytest.approx(round(0.6 * total) / total)
    assert report.figures["sparsity"] == pytest.approx(0.6, abs=1e-3)
    assert report.figures["params_after"] == report.figures["params_before"]


def test_layer_scope_prunes_every_layer_to_the_amount(digits, digits_cnn):
    model = copy.deepcopy(digits_cnn)
    PruneStep({"amount": 0.5, "scope": "layer"}).apply(model, context(digits))
    for layer in weighted_layers(model).values():
        zeros = int((layer.weight == 0).sum())
        assert zeros == round(0.5 * layer.weight.numel())


def test_unstructured_pruning_leaves_plain_weights_for_export(digits, digits_cnn):
    model = copy.deepcopy(digits_cnn)
    keys = list(model.state_dict())
    PruneStep({"amount": 0.5}).apply(model, context(digits))
    assert list(model.state_dict()) == keys
    for layer in weighted_layers(model).values():
        assert not torch.nn.utils.parametrize.is_parametrized(layer)
        assert not layer._forward_pre_hooks and not layer._forward_hooks
        assert type(layer.weight) is nn.Parameter


def test_magnitude_pruning_keeps_accuracy_and_skips_named_layers(digits, digits_cnn):
    model = copy.deepcopy(digits_cnn)
    step = PruneStep({"amount": 0.5, "skip": ["features.0"], "per_layer": {"classifier.2": 0.2}})
    model, _ = step.apply(model, context(digits))
    layers = weighted_layers(model)
    assert int((layers["features.0"].weight == 0).sum()) == 0
    assert float((layers["classifier.2"].weight == 0).float().mean()) == pytest.approx(0.2, 0.01)
    # Half the weights by global magnitude: a trained digits-cnn loses at most 2 points.
    assert accuracy(model, digits.test_loader()) >= accuracy(digits_cnn, digits.test_loader()) - 2


@pytest.mark.parametrize("method", ["l1-structured", "taylor-structured"])
def test_structured_pruning_removes_channels_and_keeps_shapes_consistent(
    digits, digits_cnn, method
):
    model = copy.deepcopy(digits_cnn)
    model, report = PruneStep({"method": method, "amount": 0.5}).apply(model, context(digits))
    features, classifier = model.features, model.classifier
    assert (features[0].out_channels, features[1].num_features) == (8, 8)
    assert (features[3].in_channels, features[3].out_channels, features[4].num_features) == (
        8, 16, 16,
    )
    assert classifier[0].in_features == 16 * 4 * 4
    assert classifier[2].out_features == 10  # the classifier output is never pruned
    assert report.figures["channels_removed"]["features.0"] == 8
    assert count_params(model) < 0.4 * count_params(digits_cnn)
    assert model(digits.test_x[:5]).shape == (5, 10)


def test_structured_pruning_then_finetune_recovers_accuracy(digits, digits_cnn):
    model = copy.deepcopy(digits_cnn)
    ctx = context(digits)
    model, _ = PruneStep({"method": "l1-structured", "amount": 0.5}).apply(model, ctx)
    model, report = FinetuneStep({"epochs": 3, "lr": 2e-3}).apply(model, ctx)
    base = accuracy(digits_cnn, digits.test_loader())
    assert report.figures["accuracy_after_pct"] >= base - 1.5


def test_structured_pruning_keeps_a_residual_block_consistent(digits):
    torch.manual_seed(0)
    model = ResidualNet()
    before = count_params(model)
    step = PruneStep({"method": "l1-structured", "amount": 0.5})
    model, report = step.apply(model, context(digits))
    # The identity add couples stem, conv2 and bn2: they lose the same channels.
    assert model.stem[0].out_channels == model.conv2.out_channels == model.bn2.num_features == 8
    assert model.conv1.out_channels == model.bn1.num_features == model.conv2.in_channels == 8
    assert model.head.in_features == 8 * 8 * 8 and model.head.out_features == 10
    assert report.figures["params_after"] == count_params(model) < before / 2
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_per_layer_structured_amount_and_skip(digits, digits_cnn):
    model = copy.deepcopy(digits_cnn)
    step = PruneStep({"method": "l1-structured", "amount": 0.25, "skip": ["features.0"],
                      "per_layer": {"classifier.0": 0.5}})
    model, _ = step.apply(model, context(digits))
    assert model.features[0].out_channels == 16
    assert model.features[3].out_channels == 24
    assert model.classifier[0].out_features == 64


def test_finetune_keeps_pruned_zeros_at_zero(digits, digits_cnn):
    model = copy.deepcopy(digits_cnn)
    ctx = context(digits)
    model, _ = PruneStep({"amount": 0.8}).apply(model, ctx)
    zeros = {n: m.weight == 0 for n, m in weighted_layers(model).items()}
    model, report = FinetuneStep({"epochs": 1}).apply(model, ctx)
    assert report.figures["kept_zeros"] is True
    for name, layer in weighted_layers(model).items():
        assert bool((layer.weight[zeros[name]] == 0).all())
    assert report.figures["accuracy_after_pct"] >= 95.0


def test_finetune_l1_penalty_shrinks_weights(digits, digits_cnn):
    def l1_norm(model: nn.Module) -> float:
        return float(sum(m.weight.detach().abs().sum() for m in weighted_layers(model).values()))

    plain, penalised = copy.deepcopy(digits_cnn), copy.deepcopy(digits_cnn)
    FinetuneStep({"epochs": 1}).apply(plain, context(digits))
    FinetuneStep({"epochs": 1, "l1": 1e-4}).apply(penalised, context(digits))
    assert l1_norm(penalised) < 0.9 * l1_norm(plain)


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"amount": 1.5}, "prune.amount: expected a number with 0 < x < 1"),
        ({"amount": "half"}, "prune.amount"),
        ({"method": "l2"}, "prune.method: expected one of magnitude"),
        ({"scope": "all"}, "prune.scope"),
        ({"ratio": 0.5}, "prune.ratio: expected one of the parameters"),
        ({"per_layer": {"features.0": 1.0}}, "prune.per_layer.features.0"),
        ({"per_layer": ["features.0"]}, "prune.per_layer: expected a mapping"),
        ({"skip": "features.0"}, "prune.skip: expected a list of layer names"),
        ({"batches": 0}, "prune.batches: expected an integer >= 1"),
    ],
)
def test_bad_prune_params_fail_naming_the_key(params, named):
    with pytest.raises(RecipeError, match=named.replace(".", r"\.")):
        PruneStep(params)


def test_unknown_layer_name_fails_before_the_model_changes(digits, digits_cnn):
    model = copy.deepcopy(digits_cnn)
    step = PruneStep({"method": "l1-structured", "skip": ["features.9"]})
    with pytest.raises(RecipeError, match=r"prune\.skip: expected layer names of the model"):
        step.apply(model, context(digits))
    assert count_params(model) == count_params(digits_cnn)


@pytest.mark.parametrize(
    ("params", "named"),
    [({"epochs": 0}, "finetune.epochs"), ({"lr": -1}, "finetune.lr"),
     ({"l1": -0.1}, "finetune.l1"), ({"keep_zeros": "yes"}, "finetune.keep_zeros")],
)
def test_bad_finetune_params_fail_naming_the_key(params, named):
    with pytest.raises(RecipeError, match=named.replace(".", r"\.")):
        FinetuneStep(params)

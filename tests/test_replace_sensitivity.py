"""Depthwise-separable replacement and per-layer sensitivity on the real digits data."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
from torch import nn

from toolkit.compress.base import StepContext
from toolkit.compress.steps.prune import PER_LAYER_ARTIFACT, PruneStep, count_params
from toolkit.compress.steps.replace import ReplaceStep, depthwise_separable
from toolkit.compress.steps.sensitivity import SensitivityStep, layer_sensitivity
from toolkit.errors import RecipeError
from toolkit.models.train import accuracy


def context(data, **artifacts) -> StepContext:
    return StepContext(data=data, input_shape=(1, 1, 8, 8), artifacts=dict(artifacts))


def test_replace_yields_depthwise_separable_convs_and_recovers(digits, digits_cnn):
    model = copy.deepcopy(digits_cnn)
    model, report = ReplaceStep({"then": "finetune", "epochs": 3}).apply(model, context(digits))
    assert isinstance(model.features[0], nn.Conv2d)  # one input channel: left alone
    depthwise, pointwise = model.features[3]
    assert depthwise.groups == depthwise.in_channels == depthwise.out_channels == 16
    assert depthwise.kernel_size == (3, 3)
    assert pointwise.kernel_size == (1, 1) and pointwise.out_channels == 32
    assert report.figures["replaced"] == ["features.3"]
    assert report.figures["params_after"] == count_params(model) < count_params(digits_cnn)
    base = accuracy(digits_cnn, digits.test_loader())
    assert report.figures["accuracy_after_pct"] >= base - 2.0
    assert model(digits.test_x[:3]).shape == (3, 10)


def test_replace_with_distill_and_the_first_conv(digits, digits_cnn):
    model = copy.deepcopy(digits_cnn)
    step = ReplaceStep({"then": "distill", "epochs": 2, "include_first": True})
    model, report = step.apply(model, context(digits))
    assert report.figures["replaced"] == ["features.0", "features.3"]
    assert model.features[0][0].groups == 1 == model.features[0][0].in_channels
    assert report.figures["accuracy_after_pct"] >= 95.0


def test_depthwise_separable_is_exact_for_separable_filters():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1, stride=2)
    with torch.no_grad():  # W[o, i] = P[o, i] · D[i]: exactly depthwise-separable
        conv.weight.copy_(torch.randn(6, 4, 1, 1) * torch.randn(1, 4, 3, 3))
    x = torch.randn(2, 4, 9, 9)
    torch.testing.assert_close(depthwise_separable(conv)(x), conv(x), atol=1e-5, rtol=1e-5)


def test_layer_sensitivity_table_and_plot(digits, digits_cnn, tmp_path):
    table = layer_sensitivity(digits_cnn, digits, ratios=(0.25, 0.75), method="l1-structured")
    frame = table.to_frame()
    assert isinstance(frame, pd.DataFrame)
    # The classifier's outputs are never pruned, so it is not probed.
    assert list(frame.layer.unique()) == ["features.0", "features.3", "classifier.0"]
    assert len(frame) == 6 and set(frame.ratio) == {0.25, 0.75}
    row = frame.iloc[0]
    assert row.drop_pts == pytest.approx(table.baseline_accuracy_pct - row.accuracy_pct, abs=1e-2)
    png = table.plot(tmp_path / "sens.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sensitivity_step_hands_amounts_to_the_next_prune(digits, digits_cnn, tmp_path):
    model = copy.deepcopy(digits_cnn)
    ctx = context(digits, out_dir=str(tmp_path))
    step = SensitivityStep({"ratios": [0.25, 0.5], "apply_to_next_prune": True, "max_drop": 1.0,
                            "plot": "sens.png", "table": "sens.csv"})
    model, report = step.apply(model, ctx)
    assert count_params(model) == count_params(digits_cnn)  # unchanged
    amounts = ctx.artifacts[PER_LAYER_ARTIFACT]
    table = ctx.artifacts["sensitivity"]
    assert amounts == table.amounts(1.0) == report.figures["per_layer_amounts"]
    for row in table.rows:  # each chosen amount is the largest ratio within the allowed drop
        if row.ratio == amounts[row.layer]:
            assert row.drop_pts <= 1.0
        if row.ratio > amounts[row.layer]:
            assert row.drop_pts > 1.0
    assert (tmp_path / "sens.png").is_file()
    assert len(pd.read_csv(tmp_path / "sens.csv")) == 6
    model, pruned = PruneStep({"method": "l1-structured"}).apply(model, ctx)
    widths = {"features.0": 16, "features.3": 32, "classifier.0": 128}
    removed = pruned.figures["channels_removed"]
    for name, amount in amounts.items():
        assert removed.get(name, 0) == int(widths[name] * amount)
    assert PER_LAYER_ARTIFACT not in ctx.artifacts  # used once


def test_unstructured_sensitivity_probes_every_layer(digits, digits_cnn):
    table = layer_sensitivity(digits_cnn, digits, ratios=(0.9,), method="magnitude")
    assert [row.layer for row in table.rows] == [
        "features.0", "features.3", "classifier.0", "classifier.2",
    ]
    assert max(row.drop_pts for row in table.rows) > 0


@pytest.mark.parametrize(
    ("cls", "params", "named"),
    [
        (ReplaceStep, {"then": "retrain"}, "replace.then: expected one of finetune, distill"),
        (ReplaceStep, {"include_first": "yes"}, "replace.include_first"),
        (ReplaceStep, {"epochs": 0}, "replace.epochs"),
        (SensitivityStep, {"ratios": [0.5, 1.0]}, "sensitivity.ratios: expected a number"),
        (SensitivityStep, {"ratios": []}, "sensitivity.ratios"),
        (SensitivityStep, {"max_drop": -1}, "sensitivity.max_drop"),
        (SensitivityStep, {"method": "l0"}, "sensitivity.method"),
        (SensitivityStep, {"plot": 3}, "sensitivity.plot: expected a file path"),
    ],
)
def test_bad_params_fail_naming_the_key(cls, params, named):
    with pytest.raises(RecipeError, match=named.replace(".", r"\.")):
        cls(params)


def test_unknown_layer_names_fail_naming_the_key(digits, digits_cnn):
    with pytest.raises(RecipeError, match=r"replace\.layers: expected layer names"):
        ReplaceStep({"layers": ["features.1"]}).apply(copy.deepcopy(digits_cnn), context(digits))
    with pytest.raises(RecipeError, match=r"sensitivity\.layers: expected layer names"):
        SensitivityStep({"layers": ["x"]}).apply(copy.deepcopy(digits_cnn), context(digits))

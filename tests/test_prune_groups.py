"""Structured pruning by dependency group: residual, depthwise + squeeze-excite, attention heads."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from toolkit.compress.base import StepContext
from toolkit.compress.groups import find_groups
from toolkit.compress.steps.prune import PruneStep
from toolkit.errors import RecipeError


class SE(nn.Module):
    def __init__(self, c, r=4):
        super().__init__()
        self.fc1 = nn.Conv2d(c, c // r, 1)
        self.fc2 = nn.Conv2d(c // r, c, 1)
    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))

class InvertedResidual(nn.Module):
    def __init__(self, c, expand=4):
        super().__init__()
        h = c * expand
        self.expand = nn.Sequential(nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h),
                                    nn.Hardswish())
        self.dw = nn.Sequential(nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False),
                                nn.BatchNorm2d(h), nn.Hardswish())
        self.se = SE(h)
        self.project = nn.Sequential(nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c))
    def forward(self, x):
        return x + self.project(self.se(self.dw(self.expand(x))))

class MobileBlockNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU6())
        self.block = InvertedResidual(16)
        self.head = nn.Linear(16, 10)
    def forward(self, x):
        return self.head(self.block(self.stem(x)).mean((2, 3)))

class TransformerClassifier(nn.Module):
    def __init__(self, d=32, heads=4, layers=2, seq=8, feat=8):
        super().__init__()
        self.embed = nn.Linear(feat, d)
        self.pos = nn.Parameter(torch.zeros(1, seq, d))
        layer = nn.TransformerEncoderLayer(d, heads, 64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, 10)
    def forward(self, x):
        x = x.flatten(1, 2)
        return self.head(self.encoder(self.embed(x) + self.pos).mean(1))

class Attention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.num_heads, self.head_dim = heads, d // heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-2, -1) * self.head_dim ** -0.5, -1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))

class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(d), Attention(d, heads)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))

class TinyViT(nn.Module):
    def __init__(self, d=32, heads=4):
        super().__init__()
        self.patch = nn.Conv2d(1, d, 2, 2)
        self.blocks = nn.Sequential(Block(d, heads), Block(d, heads))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 10)
    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        return self.head(self.norm(self.blocks(x)).mean(1))


class ResidualNet(nn.Module):
    """stem conv-bn, a residual block (conv-bn-relu-conv-bn + identity), linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.conv1, self.bn1 = nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return self.head(torch.relu(x + y).mean((2, 3)))


def _prune(model, shape, params):
    torch.manual_seed(0)
    return PruneStep(params).apply(model.eval(), StepContext(data=None, input_shape=shape))


def _sha(model) -> str:
    from toolkit.compress.metrics import state_sha256

    return state_sha256(model)


def test_residual_add_couples_stem_and_second_conv_in_one_group():
    groups = {g.name: g for g in find_groups(ResidualNet(), (1, 1, 8, 8))}
    assert set(groups) == {"stem.0", "conv1", "head"}
    assert {"stem.0", "conv2", "bn2", "conv1", "head"} <= set(groups["stem.0"].layers)
    assert groups["stem.0"].channels == 16 and groups["conv1"].channels == 16
    assert not groups["head"].prunable and "output" in groups["head"].reason


def test_depthwise_and_squeeze_excite_share_the_expansion_group():
    groups = {g.name: g for g in find_groups(MobileBlockNet(), (1, 3, 16, 16))}
    expand = groups["block.expand.0"]
    assert expand.channels == 64
    assert {"block.dw.0", "block.se.fc1", "block.se.fc2", "block.project.0"} <= set(expand.layers)
    assert groups["block.se.fc1"].channels == 16
    assert "block.project.0" in groups["stem.0"].layers  # residual add


@pytest.mark.parametrize("model", [TransformerClassifier, TinyViT])
def test_attention_blocks_are_groups_of_heads(model):
    shape = (1, 8, 1, 8) if model is TransformerClassifier else (1, 1, 8, 8)
    heads = [g for g in find_groups(model(), shape) if g.unit == "heads"]
    assert len(heads) == 2 and all(g.channels == 4 and g.prunable for g in heads)


def test_a_group_pruned_by_30_percent_keeps_the_right_channels_and_exports():
    model, report = _prune(MobileBlockNet(), (1, 3, 16, 16),
                           {"method": "l1-structured", "per_layer": {"block.expand.0": 0.3}})
    block = model.block
    assert block.expand[0].out_channels == block.dw[0].out_channels == 45  # 64 - round(19.2)
    assert block.dw[0].groups == 45 and block.se.fc1.in_channels == 45
    assert block.se.fc2.out_channels == block.project[0].in_channels == 45
    assert model.stem[0].out_channels == 16  # other groups untouched
    x = torch.randn(1, 3, 16, 16)
    exported = torch.export.export(model, (x,))
    torch.testing.assert_close(exported.module()(x), model(x))
    assert report.figures["groups"] == {"block.expand.0": "64->45 channels"}


def test_transformer_l1_structured_prunes_whole_heads_and_runs():
    model, report = _prune(TransformerClassifier(), (1, 8, 1, 8),
                           {"method": "l1-structured", "amount": 0.3})
    for layer in model.encoder.layers:
        attn = layer.self_attn
        assert attn.num_heads == 3 and attn.head_dim == 8
        assert attn.q_proj.out_features == attn.out_proj.in_features == 24
        assert layer.linear1.out_features == 45
    x = torch.randn(2, 8, 1, 8)
    assert model(x).shape == (2, 10)
    torch.export.export(model.eval(), (x[:1],))


def test_hand_written_attention_keeps_num_heads_consistent():
    model, _ = _prune(TinyViT(), (1, 1, 8, 8), {"method": "l1-structured",
                                                "per_layer": {"blocks.0.attn": 0.5}})
    attn = model.blocks[0].attn
    assert attn.num_heads == 2 and attn.qkv.out_features == 3 * 2 * 8
    assert model.blocks[1].attn.num_heads == 4
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_per_layer_amount_on_a_coupled_conv_prunes_its_whole_group():
    base = ResidualNet().eval()
    model, report = _prune(copy.deepcopy(base), (1, 1, 8, 8),
                           {"method": "l1-structured", "per_layer": {"conv2": 0.5}})
    assert model.stem[0].out_channels == model.conv2.out_channels == model.bn2.num_features == 8
    assert model.conv1.out_channels == 16
    assert _sha(model) != _sha(base)
    assert report.figures["groups"] == {"stem.0": "16->8 channels"}


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"per_layer": {"conv2": 0.01}}, "group stem.0 (16 channels) removes nothing"),
        ({"per_layer": {"head": 0.5}}, "group head cannot be pruned"),
        ({"per_layer": {"stem.0": 0.5, "conv2": 0.25}}, "group stem.0 is already set"),
        ({"keep": {"conv1": 16}}, "prune.keep.conv1: group conv1 has 16 channels"),
    ],
)
def test_a_group_amount_that_cannot_apply_is_an_error_naming_the_group(params, says):
    base = ResidualNet().eval()
    model = copy.deepcopy(base)
    with pytest.raises(RecipeError, match=says.replace(".", r"\.").replace("(", r"\(")
                       .replace(")", r"\)")):
        _prune(model, (1, 1, 8, 8), {"method": "l1-structured", **params})
    assert _sha(model) == _sha(base)  # nothing was cut before the error


def test_round_to_keeps_multiples_and_reports_groups_it_leaves_whole():
    model, report = _prune(MobileBlockNet(), (1, 3, 16, 16),
                           {"method": "l1-structured", "amount": 0.3, "round_to": 8})
    assert model.block.expand[0].out_channels == 48  # 45 rounded to a multiple of 8
    assert model.stem[0].out_channels == 8  # 11 -> 8
    assert model.block.se.fc1.out_channels == 8
    model, report = _prune(MobileBlockNet(), (1, 3, 16, 16),
                           {"method": "l1-structured", "amount": 0.3, "round_to": 16})
    assert model.block.expand[0].out_channels == 48 and model.stem[0].out_channels == 16
    assert set(report.figures["groups_unchanged"]) == {"stem.0", "block.se.fc1"}
    with pytest.raises(RecipeError, match=r"removes no channel \(stem\.0: 0\.3 of 16"):
        _prune(ResidualNet(), (1, 1, 8, 8), {"method": "l1-structured", "amount": 0.3,
                                              "round_to": 16})

"""The zoo: published architectures that build, run, export, convert, and count as published;
and the bundled digits-mobilenet reference model and its digits-32 dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.litert_partitions import known_partitions
from toolkit.data import load_dataset
from toolkit.models import default_dataset
from toolkit.models.zoo import ZOO, build
from toolkit.models.zoo.vit import Attention

PUBLISHED = sorted(name for name, entry in ZOO.items() if entry.published_params)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Building and exporting use one torch thread (2 cores are shared)."""


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_model_runs_at_its_input_shape_and_exports_with_torch_export(name):
    entry = ZOO[name]
    torch.manual_seed(0)
    model = build(name).eval()
    assert tuple(model.input_shape) == entry.input_shape
    x = torch.randn(entry.input_shape)
    with torch.no_grad():
        expected = model(x)
    assert expected.shape == (1, 10) and torch.isfinite(expected).all()
    program = torch.export.export(model, (x,))
    assert torch.allclose(program.module()(x), expected, atol=1e-5)


@pytest.mark.parametrize("name", PUBLISHED)
def test_parameter_count_matches_the_published_figure(name):
    """At the published configuration (1000 classes at 224×224; DS-CNN: MLPerf Tiny's 12
    keywords) the count is the published one: the blocks are the published blocks."""
    entry = ZOO[name]
    assert _params(entry.constructor(**entry.published_config)) == entry.published_params


def test_width_multiplier_narrows_mobilenet_v2_in_multiples_of_8():
    narrow = build("mobilenet_v2", width=0.5)
    convs = [m for m in narrow.modules() if isinstance(m, nn.Conv2d)]
    assert all(m.out_channels % 8 == 0 for m in convs)
    assert _params(narrow) < _params(build("mobilenet_v2")) / 2


def test_vit_attention_keeps_heads_and_head_dim_consistent_with_its_projections():
    model = build("vit_tiny", depth=2)
    attentions = [m for m in model.modules() if isinstance(m, Attention)]
    assert len(attentions) == 2
    for attn in attentions:
        assert (attn.num_heads, attn.head_dim) == (3, 64)
        assert attn.qkv.out_features == 3 * attn.num_heads * attn.head_dim
        assert attn.proj.in_features == attn.num_heads * attn.head_dim


def test_unknown_zoo_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="mobilenet_v2"):
        build("mobilenet_v9")


def _settle_batchnorm(model: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    """Gives BatchNorm real running statistics so outputs are not all near zero."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn((8, *shape[1:])))
    return model.eval()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_model_converts_to_fp32_tflite_that_computes_what_torch_does(name, tmp_path):
    from toolkit.export.host_runtime import run_artifact
    from toolkit.export.tflite import export_tflite

    entry = ZOO[name]
    torch.manual_seed(0)
    model = _settle_batchnorm(build(name), entry.input_shape)
    path = export_tflite(model, entry.input_shape, tmp_path / f"{name}.tflite")
    x = torch.randn(entry.input_shape)
    with torch.no_grad():
        expected = model(x).numpy()
    got = run_artifact(path, x.numpy())
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-3 * np.abs(expected).max()


def test_digits_32_is_digits_upsampled_with_the_same_split_and_labels():
    small, large = load_dataset("digits"), load_dataset("digits-32")
    assert large.name == "digits-32" and large.input_shape == (1, 32, 32)
    assert torch.equal(small.test_y, large.test_y) and torch.equal(small.train_y, large.train_y)
    assert large.train_x.shape == (len(small.train_x), 1, 32, 32)
    upsampled = nn.functional.interpolate(
        small.test_x, size=(32, 32), mode="bilinear", align_corners=False
    )
    assert torch.equal(large.test_x, upsampled)
    assert 0.0 <= float(large.train_x.min()) and float(large.train_x.max()) <= 1.0
    assert torch.equal(load_dataset("digits-32").test_x, large.test_x)


def test_reference_models_name_their_own_default_dataset():
    assert default_dataset("digits-mobilenet") == "digits-32"
    assert default_dataset("digits-cnn") == "digits"
    assert default_dataset("net.py:build") == "digits"


@pytest.mark.slow
def test_digits_mobilenet_is_trained_on_digits_32_to_97_percent(digits_mobilenet):
    from toolkit.models.reference import reference_card
    from toolkit.models.train import accuracy

    assert digits_mobilenet.input_shape == (1, 1, 32, 32)
    data = load_dataset("digits-32")
    assert accuracy(digits_mobilenet, data.test_loader()) >= 97.0
    assert reference_card("digits-mobilenet")["test_accuracy_pct"] >= 97.0


@pytest.mark.slow
def test_ds_cnn_int8_is_one_partition_and_its_stem_is_a_conv_on_space_to_depth_blocks(tmp_path):
    """MLPerf Tiny's DS-CNN stem (1 → 64 channels, 10×4/2) lowers to a depthwise conv with a
    depth multiplier of 64, which XNNPACK's int8 GEMM runs 8× padded (slower than fp32); the
    int8 graph cuts the input into 2×2 blocks so it is a CONV_2D on 4 channels."""
    from toolkit.compress.pipeline import compress
    from toolkit.data.dataset import Dataset
    from toolkit.export.ops import float_islands, op_histogram

    torch.manual_seed(0)
    model = build("ds_cnn").eval()
    x = torch.randn(128, 1, 49, 10)
    with torch.no_grad():
        y = model(x).argmax(1)
    data = Dataset("kws-noise", x[:64], y[:64], x[64:], y[64:], 10, (1, 49, 10))
    result = compress(
        model,
        [{"quantize": {"scheme": "int8-static", "calibration": 64}}],
        data,
        tmp_path,
        export=("tflite",),
    )
    path = result.artifacts["tflite"]
    histogram = op_histogram(path)
    assert histogram["DEPTHWISE_CONV_2D"] == 4 and histogram["CONV_2D"] == 5, histogram
    islands = float_islands(path)
    assert (islands.count, islands.quantize_ops, islands.dequantize_ops) == (0, 0, 0)
    assert known_partitions(path) == 1 and islands.partitions == 1, islands.describe()
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    stem = next(op for op in interpreter._get_ops_details() if op["op_name"] == "CONV_2D")
    assert list(tensors[stem["inputs"][1]]["shape"]) == [64, 5, 2, 4]  # 10×4 cut in 2×2 blocks


@pytest.mark.slow
def test_resnet18_is_one_delegate_partition_in_fp32(tmp_path):
    from toolkit.export import export_tflite
    from toolkit.export.ops import float_islands, op_histogram

    model = build("resnet18").eval()
    path = export_tflite(model, model.input_shape, tmp_path / "resnet18.tflite")
    assert "PADV2" not in op_histogram(path)  # the stem's max pool pads with 0 after ReLU
    assert known_partitions(path) == 1, float_islands(path).describe()

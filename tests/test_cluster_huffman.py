"""Weight clustering and Huffman coding: at most k values, bit-exact decoding, real savings."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from toolkit.compress.base import StepContext
from toolkit.compress.steps.cluster import ClusterStep
from toolkit.compress.steps.finetune import FinetuneStep
from toolkit.compress.steps.huffman import (
    HuffmanStep,
    decode,
    encode,
    huffman_coded_bytes,
    weight_arrays,
)
from toolkit.compress.steps.prune import PruneStep, weighted_layers
from toolkit.errors import RecipeError
from toolkit.models.train import accuracy


def context(data) -> StepContext:
    return StepContext(data=data, input_shape=(1, 1, 8, 8))


def test_cluster_leaves_at_most_k_values_per_layer(digits, digits_cnn):
    model = copy.deepcopy(digits_cnn)
    model, report = ClusterStep({"clusters": 8}).apply(model, context(digits))
    for name, layer in weighted_layers(model).items():
        assert layer.weight.unique().numel() <= 8
        assert report.figures["unique_values"][name] == layer.weight.unique().numel()
    assert accuracy(model, digits.test_loader()) >= accuracy(digits_cnn, digits.test_loader()) - 2


def test_cluster_finetune_keeps_sharing_and_pruned_zeros(digits, digits_cnn):
    ctx = context(digits)
    model, _ = PruneStep({"amount": 0.7}).apply(copy.deepcopy(digits_cnn), ctx)
    zeros = {n: m.weight == 0 for n, m in weighted_layers(model).items()}
    before = {n: m.weight.clone() for n, m in weighted_layers(model).items()}
    model, _ = ClusterStep({"clusters": 4, "finetune_epochs": 1}).apply(model, ctx)
    for name, layer in weighted_layers(model).items():
        assert layer.weight.unique().numel() <= 4
        assert bool((layer.weight[zeros[name]] == 0).all())
    assert any(not torch.equal(before[n], m.weight) for n, m in weighted_layers(model).items())


def test_cluster_only_the_named_layers(digits, digits_cnn):
    model = copy.deepcopy(digits_cnn)
    step = ClusterStep({"clusters": 4, "layers": ["classifier.0"]})
    model, _ = step.apply(model, context(digits))
    assert model.classifier[0].weight.unique().numel() <= 4
    assert model.features[3].weight.unique().numel() > 4


@pytest.mark.parametrize(
    "array",
    [
        np.random.default_rng(0).standard_normal((64, 33)).astype(np.float32),
        np.random.default_rng(1).integers(-128, 128, (40, 40)).astype(np.int8),
        np.random.default_rng(2).standard_normal(17).astype(np.float16),
        np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-45], dtype=np.float32),
        np.full((3, 5), 0.25, dtype=np.float32),
        np.zeros((0, 4), dtype=np.float32),
    ],
    ids=["float32", "int8", "float16", "special-values", "one-symbol", "empty"],
)
def test_huffman_decode_gives_back_the_exact_bits(array):
    decoded = decode(encode(array))
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    assert decoded.tobytes() == array.tobytes()


def test_huffman_codes_a_skewed_alphabet_across_decode_blocks():
    rng = np.random.default_rng(3)
    # 1,000 symbols, geometric frequencies: a real code (not stored) of over 2**20 bits.
    values = (rng.geometric(0.01, size=300_000) % 1000).astype(np.float32) / 7
    coded = encode(values)
    assert not coded.stored and coded.n_bits > 1 << 20
    assert coded.coded_bytes < values.nbytes / 3
    assert decode(coded).tobytes() == values.tobytes()


def test_huffman_keeps_incompressible_floats_stored_at_raw_size():
    array = np.random.default_rng(4).standard_normal(5000).astype(np.float32)
    coded = encode(array)
    assert coded.stored and coded.coded_bytes == array.nbytes + 8
    assert decode(coded).tobytes() == array.tobytes()


def test_pruned_and_clustered_model_codes_ten_times_below_fp32(digits, digits_cnn):
    ctx = context(digits)
    model = copy.deepcopy(digits_cnn)
    for step in (PruneStep({"amount": 0.8}), FinetuneStep({"epochs": 2}),
                 ClusterStep({"clusters": 16})):
        model, _ = step.apply(model, ctx)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model, report = HuffmanStep({}).apply(model, ctx)
    raw = sum(a.size * 4 for a in weight_arrays(model).values())
    assert report.figures["raw_fp32_bytes"] == raw
    assert report.figures["coded_bytes"] == huffman_coded_bytes(model)
    assert raw / report.figures["coded_bytes"] >= 10
    assert report.figures["verified_bit_exact"] is True
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # unchanged
    assert accuracy(model, digits.test_loader()) >= 95.0


def test_plain_model_codes_near_its_raw_size(digits_cnn):
    raw = sum(a.nbytes for a in weight_arrays(digits_cnn).values())
    coded = huffman_coded_bytes(digits_cnn)
    assert raw * 0.9 < coded <= raw + 8 * len(weight_arrays(digits_cnn))


@pytest.mark.parametrize(("scheme", "dtype", "min_ratio"),
                         [("int8-static", np.int8, 3.5), ("fp16", np.float16, 1.9)])
def test_huffman_codes_quantized_weights_at_their_stored_precision(
    digits, digits_cnn, scheme, dtype, min_ratio
):
    from toolkit.compress.steps.quantize.step import QuantizeStep

    ctx = context(digits)
    model, _ = QuantizeStep({"scheme": scheme}).apply(copy.deepcopy(digits_cnn), ctx)
    arrays = weight_arrays(model)
    assert arrays["classifier.0.weight"].dtype == dtype
    assert np.unique(arrays["features.3.weight"]).size <= (256 if dtype == np.int8 else 65536)
    model, report = HuffmanStep({}).apply(model, ctx)
    assert report.figures["raw_fp32_bytes"] / report.figures["coded_bytes"] >= min_ratio


@pytest.mark.parametrize(
    ("cls", "params", "named"),
    [
        (ClusterStep, {"clusters": 1}, "cluster.clusters: expected an integer >= 2 and <= 256"),
        (ClusterStep, {"clusters": 16.5}, "cluster.clusters"),
        (ClusterStep, {"finetune_epochs": -1}, "cluster.finetune_epochs"),
        (ClusterStep, {"k": 4}, "cluster.k: expected one of the parameters"),
        (HuffmanStep, {"verify": "yes"}, "huffman.verify: expected true or false"),
    ],
)
def test_bad_params_fail_naming_the_key(cls, params, named):
    with pytest.raises(RecipeError, match=named.replace(".", r"\.")):
        cls(params)


def test_cluster_unknown_layer_fails_naming_the_key(digits, digits_cnn):
    with pytest.raises(RecipeError, match=r"cluster\.layers: expected layer names"):
        ClusterStep({"layers": ["nope"]}).apply(copy.deepcopy(digits_cnn), context(digits))

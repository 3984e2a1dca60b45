"""Recipes and `compress()`: checked before any work, applied in order, artifacts and a card."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from toolkit.compress.card import ModelCard
from toolkit.compress.metrics import file_sha256
from toolkit.compress.pipeline import compress
from toolkit.compress.recipe import STEP_MODULES, load_recipe, register_all_steps
from toolkit.errors import ConfigError, RecipeError
from toolkit.models import load_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Training in this module uses one torch thread (2 cores are shared with the agents)."""


def write(tmp_path, text: str, name: str = "recipe.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_yaml_mapping_keeps_the_written_order(tmp_path):
    path = write(tmp_path, """
        prune: {method: l1-structured, amount: 0.3}
        finetune: {epochs: 2}
        quantize: {scheme: int8-static, calibration: 128}
    """)
    recipe = load_recipe(path)
    assert recipe.keys == ["prune", "finetune", "quantize"]
    assert recipe.entries[2] == {"quantize": {"scheme": "int8-static", "calibration": 128}}


def test_list_of_one_key_mappings_allows_a_step_twice(tmp_path):
    path = write(tmp_path, """
        - prune: {amount: 0.2}
        - finetune: {epochs: 1}
        - prune: {amount: 0.4}
        - finetune:
    """)
    assert load_recipe(path).keys == ["prune", "finetune", "prune", "finetune"]


def test_empty_file_is_the_empty_recipe(tmp_path):
    assert load_recipe(write(tmp_path, "")).steps == []


def test_every_step_module_registers_its_key():
    assert set(STEP_MODULES) <= set(register_all_steps())


def test_unknown_key_fails_before_any_work_listing_known_keys(tmp_path):
    path = write(tmp_path, "finetune: {epochs: 1}\nprnue: {amount: 0.5}\n")
    out = tmp_path / "never"
    with pytest.raises(RecipeError, match=r"step 2 \(prnue\): unknown step 'prnue'; known .*prune"):
        compress("digits-cnn", path, "digits", out)
    assert not out.exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prune: {amount: 1.5}", r"prune\.amount"),
        ("finetune: 3", r"step 1 \(finetune\): expected a mapping of parameters"),
        ("- prune: {}\n  finetune: {}", r"step 1: expected a one-key mapping"),
        ("quantize: {scheme: int8-static}\nquantize: {scheme: qat}",
         r"step 'quantize' appears twice in a mapping"),
        ("just text", r"expected a mapping of steps"),
    ],
)
def test_malformed_recipes_name_the_step_and_what_was_expected(tmp_path, text, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(write(tmp_path, text + "\n"))


def test_qat_after_int8_quantize_is_refused_with_the_reason():
    recipe = [{"quantize": {"scheme": "int8-static"}}, {"quantize": {"scheme": "qat"}}]
    with pytest.raises(RecipeError, match=r"quantize cannot come after quantize: the model is "
                                          r"already quantized \(int8-static\)"):
        load_recipe(recipe)


def test_only_huffman_may_follow_quantize():
    with pytest.raises(RecipeError, match=r"prune cannot come after quantize: only huffman"):
        load_recipe([{"quantize": {"scheme": "fp16"}}, {"prune": {"amount": 0.5}}])
    assert load_recipe([{"quantize": {"scheme": "fp16"}}, {"huffman": {}}]).keys == [
        "quantize", "huffman"]


def test_unknown_export_format_is_refused_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="export format 'coreml'"):
        compress("digits-cnn", None, "digits", tmp_path / "out", export=("tflite", "coreml"))
    assert not (tmp_path / "out").exists()


def test_empty_recipe_exports_the_fp32_baseline_with_a_complete_card(tmp_path):
    lines = []
    result = compress("digits-cnn", None, "digits", tmp_path / "base",
                      export=("tflite", "onnx"), log=lines.append)
    card = result.card
    assert set(result.artifacts) == {"pt2", "tflite", "onnx"}
    assert card.recipe == [] and card.steps == []
    assert card.accuracy_before_pct == card.accuracy_after_pct >= 95.0
    assert len(card.parent_sha256) == 64
    assert card.parameters_total == card.parent_parameters_total == sum(
        p.numel() for p in load_model("digits-cnn").module.parameters())
    # conv 1→16 and 16→32 on 8×8, linear 512→128 and 128→10
    assert card.macs == 16 * 64 * 9 + 32 * 64 * 16 * 9 + 512 * 128 + 128 * 10
    for fmt, path in result.artifacts.items():
        record = card.artifacts[fmt]
        assert record.sha256 == file_sha256(path) and record.size_bytes == path.stat().st_size
        assert 0 < record.huffman_bytes <= record.size_bytes + 1024
    for fmt in ("tflite", "onnx"):
        assert card.artifacts[fmt].parity["ok"] and card.artifacts[fmt].dtype == "fp32"
        assert card.artifacts[fmt].host_accuracy_pct == pytest.approx(card.accuracy_after_pct)
    assert ModelCard.load(result.card_path) == ModelCard.from_json(card.to_json())
    assert json.loads(result.card_path.read_text())["recipe"] == []
    reloaded = load_model(str(result.artifacts["pt2"])).module
    x = torch.rand(5, 1, 8, 8)
    assert torch.allclose(reloaded(x), result.torch_model(x), atol=1e-5)
    assert any("model.tflite" in line for line in lines)


def test_prune_finetune_quantize_recipe_shrinks_the_model_and_records_each_step(tmp_path):
    recipe = [
        {"prune": {"method": "l1-structured", "amount": 0.5}},
        {"finetune": {"epochs": 3}},
        {"quantize": {"scheme": "int8-static", "calibration": 128}},
    ]
    result = compress("digits-cnn", recipe, "digits", tmp_path / "small")
    card = result.card
    assert [s.key for s in card.steps] == ["prune", "finetune", "quantize"]
    assert all(s.seconds >= 0 and isinstance(s.figures, dict) for s in card.steps)
    assert card.parameters_total < card.parent_parameters_total / 2
    assert card.macs < card.parent_macs / 2
    assert card.weights_stored_bytes < card.weights_fp32_bytes / 3
    assert card.weights_huffman_bytes <= card.weights_stored_bytes + 1024
    assert card.quantization["scheme"] == "int8-static"
    assert card.artifacts["tflite"].dtype == "int8"
    assert card.accuracy_after_pct >= card.accuracy_before_pct - 3.0
    assert card.artifacts["tflite"].host_accuracy_pct >= card.accuracy_before_pct - 3.0


def test_user_model_file_and_npz_dataset_go_through_compress(tmp_path):
    source = write(tmp_path, """
        from torch import nn

        def build():
            return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3))
    """, name="tiny.py")
    rng = np.random.default_rng(0)
    x = rng.random((120, 3, 4)).astype(np.float32)
    np.savez(tmp_path / "tiny.npz", x=x, y=(x.sum(axis=(1, 2)) > 6).astype(np.int64))
    result = compress(f"{source}:build", [{"finetune": {"epochs": 2}}], str(tmp_path / "tiny.npz"),
                      tmp_path / "out", export=("onnx",), input_shape=(1, 3, 4))
    assert result.card.input_shape == [1, 3, 4]
    assert result.card.artifacts["onnx"].parity["ok"]


def test_cli_compress_json_and_help_recipe(tmp_path):
    from toolkit.cli.compress import compress as command

    runner = CliRunner()
    shown = runner.invoke(command, ["--help-recipe"])
    assert shown.exit_code == 0
    for key in register_all_steps():
        assert f"\n{key}\n" in shown.output
    assert "observer" in shown.output and "calibration" in shown.output
    recipe = write(tmp_path, "quantize: {scheme: fp16}\n")
    result = runner.invoke(command, ["digits-mlp", "--recipe", str(recipe), "--out",
                                     str(tmp_path / "cli"), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["card"]["quantization"]["scheme"] == "fp16"
    assert payload["card"]["artifacts"]["tflite"]["dtype"] == "fp16"
    assert (tmp_path / "cli" / "card.json").is_file()
    bad = write(tmp_path, "quantise: {}\n", name="bad.yaml")
    failed = runner.invoke(command, ["digits-mlp", "--recipe", str(bad), "--out",
                                     str(tmp_path / "no")])
    assert isinstance(failed.exception, RecipeError) and "quantise" in str(failed.exception)

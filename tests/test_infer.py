"""Infer on a real agent: outputs agree with torch; int8 models take and return floats."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from toolkit.errors import AgentError


def _inputs(n: int) -> np.ndarray:
    return np.random.default_rng(1).random((n, 1, 8, 8), dtype=np.float32)


def _reference(model_files, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model_files.torch_model(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("kind", ["tflite", "onnx", "pt2"])
def test_float_models_agree_with_torch_on_a_batch(agent, model_files, kind):
    x = _inputs(32)
    (out,) = agent.infer(getattr(model_files, kind), [x])
    assert out.shape == (32, 10) and out.dtype == np.float32
    np.testing.assert_allclose(out, _reference(model_files, x), rtol=1e-4, atol=1e-4)


def test_int8_model_takes_floats_and_returns_dequantized_floats(agent, model_files):
    x = _inputs(64)
    (out,) = agent.infer(model_files.tflite_int8, [x])
    ref = _reference(model_files, x)
    assert out.dtype == np.float32 and out.shape == ref.shape
    top1 = (out.argmax(1) == ref.argmax(1)).mean()
    assert top1 >= 0.85, f"int8 top-1 agreement {top1:.0%}"
    assert np.abs(out - ref).max() < 0.25 * np.abs(ref).max()


def test_raw_infer_returns_the_models_own_dtype(agent, model_files):
    x = np.zeros((1, 1, 8, 8), dtype=np.int8)
    (out,) = agent.infer(model_files.tflite_int8, [x], raw=True)
    assert out.dtype == np.int8


def test_wrong_input_count_is_a_clear_error(agent, model_files):
    with pytest.raises(AgentError, match="takes 1 inputs, got 2"):
        agent.infer(model_files.onnx, [_inputs(1), _inputs(1)])

"""`finetune: {device: ...}`: where a fine-tune trains, the errors for a device that is not
there, and the GPU a Ray build asks for. Training on CUDA itself runs only where torch sees a
GPU (it skips with the reason elsewhere)."""

from __future__ import annotations

import copy

import pytest
import torch

from toolkit.compress.base import StepContext
from toolkit.compress.steps.finetune import FinetuneStep
from toolkit.errors import RecipeError
from toolkit.tune.executors.ray_executor import gpus_for

HAS_CUDA = torch.cuda.is_available()


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "gpu", 0])
def test_a_device_fine_tuning_cannot_use_is_refused_naming_the_key(device):
    with pytest.raises(RecipeError, match=r"finetune\.device: expected cpu, cuda or cuda:N"):
        FinetuneStep({"device": device})


@pytest.mark.skipif(HAS_CUDA, reason="this host has CUDA: the refusal is for hosts without it")
def test_cuda_on_a_host_without_a_gpu_stops_with_one_line_naming_the_key(digits, digits_cnn):
    step = FinetuneStep({"epochs": 1, "device": "cuda"})
    with pytest.raises(RecipeError, match=r"finetune\.device: expected a CUDA device on this host"):
        step.apply(copy.deepcopy(digits_cnn), StepContext(data=digits, input_shape=(1, 1, 8, 8)))


@pytest.mark.skipif(not HAS_CUDA, reason="torch sees no CUDA device on this host")
def test_a_cuda_fine_tune_trains_there_and_returns_the_model_on_the_cpu(digits, digits_cnn):
    model = copy.deepcopy(digits_cnn)
    before = [p.detach().clone() for p in model.parameters()]
    step = FinetuneStep({"epochs": 1, "device": "cuda"})
    trained, report = step.apply(model, StepContext(data=digits, input_shape=(1, 1, 8, 8)))
    assert all(p.device.type == "cpu" for p in trained.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, trained.parameters()))
    assert report.figures["accuracy_after_pct"] > 80


def test_a_cuda_fine_tune_asks_ray_for_one_gpu_and_a_cpu_one_for_none():
    assert gpus_for([{"prune": {"amount": 0.3}}, {"finetune": {"device": "cuda:0"}}]) == 1
    assert gpus_for([{"prune": {"amount": 0.3}}, {"finetune": {"epochs": 2}}]) == 0

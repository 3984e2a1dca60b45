"""Real model files for tests, built from a small torch model: fp32 and int8 TFLite, ONNX, .pt2."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

INPUT_SHAPE = (1, 1, 8, 8)


def tiny_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(16 * 8 * 8, 10),
    ).eval()


@dataclass(frozen=True)
class ModelFiles:
    torch_model: torch.nn.Module
    tflite: Path
    tflite_int8: Path
    onnx: Path
    pt2: Path


def build_tflite(model: torch.nn.Module, path: Path) -> Path:
    import litert_torch

    litert_torch.convert(model, (torch.randn(INPUT_SHAPE),)).export(str(path))
    return path


def build_tflite_int8(model: torch.nn.Module, path: Path, calibration: torch.Tensor) -> Path:
    import litert_torch
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    sample = (torch.randn(INPUT_SHAPE),)
    prepared = prepare_pt2e(torch.export.export(model, sample).module(), quantizer)
    for x in calibration:
        prepared(x.unsqueeze(0))
    converted = convert_pt2e(prepared, fold_quantize=False)
    litert_torch.convert(
        converted, sample, quant_config=QuantConfig(pt2e_quantizer=quantizer)
    ).export(str(path))
    return path


def build_onnx(model: torch.nn.Module, path: Path) -> Path:
    torch.onnx.export(
        model, (torch.randn(INPUT_SHAPE),), str(path), dynamo=True, external_data=False
    )
    return path


def build_pt2(model: torch.nn.Module, path: Path) -> Path:
    torch.export.save(torch.export.export(model, (torch.randn(INPUT_SHAPE),)), str(path))
    return path


def build_all(folder: Path) -> ModelFiles:
    folder.mkdir(parents=True, exist_ok=True)
    model = tiny_cnn()
    calibration = torch.rand(32, *INPUT_SHAPE[1:])
    return ModelFiles(
        torch_model=model,
        tflite=build_tflite(model, folder / "tiny.tflite"),
        tflite_int8=build_tflite_int8(model, folder / "tiny_int8.tflite", calibration),
        onnx=build_onnx(model, folder / "tiny.onnx"),
        pt2=build_pt2(model, folder / "tiny.pt2"),
    )

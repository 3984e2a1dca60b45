"""The export stage of `compress`: model.pt2, then each requested format, each parity-checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import torch

from toolkit import quality
from toolkit.compress.card import ArtifactRecord
from toolkit.compress.metrics import file_huffman_bytes, file_sha256
from toolkit.data import Dataset
from toolkit.errors import ExportError
from toolkit.export import check_parity, export_onnx, export_tflite
from toolkit.export.host_runtime import run_artifact
from toolkit.export.plan import QuantizationPlan


def export_all(
    model: Any,
    plan: Optional[QuantizationPlan],
    input_shape: tuple[int, ...],
    data: Dataset,
    out: Path,
    formats: list[str],
    parity_samples: int,
    say: Callable[[str], None],
) -> tuple[dict[str, Path], dict[str, ArtifactRecord]]:
    """Writes model.pt2 and model.<format> for each format; returns paths and card records.

    Raises:
        ExportError: a conversion failed or an artifact disagrees with torch (names both).
    """
    paths: dict[str, Path] = {"pt2": save_pt2(model, input_shape, out / "model.pt2")}
    records = {"pt2": _record("pt2", paths["pt2"], "fp32")}
    dtype = plan.dtype if plan is not None else "fp32"
    samples = data.test_x[:parity_samples]
    for name in formats:
        path = out / f"model.{name}"
        if name == "tflite":
            export_tflite(model, input_shape, path, quantization=plan)
        else:
            export_onnx(model, input_shape, path, quantization=plan)
        report = check_parity(path, model, samples, dtype)
        outputs = run_artifact(path, data.test_x.numpy())
        host_accuracy = quality.accuracy_pct(outputs, data.test_y)
        record = _record(name, path, dtype)
        record.host_accuracy_pct = host_accuracy
        record.parity = report.to_json()
        paths[name], records[name] = path, record
        say(f"{path.name}: {record.size_bytes} bytes, host-runtime accuracy {host_accuracy:.2f}%, "
            f"parity max abs diff {report.max_abs_diff:.3g}, top-1 agreement "
            f"{report.top1_agreement_pct:.1f}%")
    return paths, records


def save_pt2(model: Any, input_shape: tuple[int, ...], path: Path) -> Path:
    """Saves `model` as a torch.export program, with a dynamic batch dimension when possible."""
    from toolkit.compress.steps.quantize.pt2e_flow import export_program

    try:
        torch.export.save(export_program(model, tuple(input_shape)), str(path))
    except Exception as exc:  # torch.export raises many kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"{path}: torch.export failed: {first}") from exc
    return path


def _record(fmt: str, path: Path, dtype: str) -> ArtifactRecord:
    return ArtifactRecord(format=fmt, path=path.name, sha256=file_sha256(path),
                          size_bytes=path.stat().st_size, huffman_bytes=file_huffman_bytes(path),
                          dtype=dtype)

"""The export stage of `compress`: model.pt2, then each requested format, each parity-checked
and its ops counted."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import torch

from toolkit import quality
from toolkit.compress.card import ArtifactRecord
from toolkit.compress.metrics import file_huffman_bytes, file_sha256
from toolkit.data import Dataset
from toolkit.errors import ExportError
from toolkit.export import check_parity, export_onnx, export_tflite
from toolkit.export.host_runtime import run_artifact
from toolkit.export.ops import float_islands, op_histogram
from toolkit.export.plan import FULL_INTEGER, NotPortableError, QuantizationPlan


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

    Each record carries the artifact's op histogram; a quantized `.tflite` or `.onnx` that
    keeps ops in float (or splits LiteRT's delegate) gets a one-line warning through `say`.
    An int8 model.pt2 holds the simulated graph in plain torch ops; one that cannot be
    expressed so is not written, and its record says why.

    Raises:
        ExportError: a conversion failed or an artifact disagrees with torch (names both).
    """
    dtype = plan.dtype if plan is not None else "fp32"
    paths: dict[str, Path] = {}
    records: dict[str, ArtifactRecord] = {}
    pt2 = out / "model.pt2"
    try:
        paths["pt2"] = save_pt2(model, input_shape, pt2, quantized=plan is not None)
        records["pt2"] = _record("pt2", pt2, dtype)
        records["pt2"].host_accuracy_pct = _pt2_accuracy(pt2, data)
    except NotPortableError as exc:
        pt2.unlink(missing_ok=True)
        records["pt2"] = ArtifactRecord(format="pt2", path="", sha256="", size_bytes=0,
                                        dtype=dtype, note=f"not written: {exc}")
        say(f"model.pt2 not written: {exc}")
    samples = data.test_x[:parity_samples]
    for name in formats:
        path = out / f"model.{name}"
        if name == "tflite":
            export_tflite(model, input_shape, path, quantization=plan)
        elif name == "pte":
            from toolkit.export.pte import export_pte

            export_pte(model, input_shape, path, quantization=plan)
        else:
            export_onnx(model, input_shape, path, quantization=plan)
        report = check_parity(path, model, samples, dtype)
        outputs = run_artifact(path, data.test_x.numpy())
        host_accuracy = quality.accuracy_pct(outputs, data.test_y)
        record = _record(name, path, dtype)
        record.host_accuracy_pct = host_accuracy
        record.parity = report.to_json()
        _describe_ops(record, path, plan, say)
        paths[name], records[name] = path, record
        say(f"{path.name}: {record.size_bytes} bytes, host-runtime accuracy {host_accuracy:.2f}%, "
            f"parity max abs diff {report.max_abs_diff:.3g}, top-1 agreement "
            f"{report.top1_agreement_pct:.1f}%")
    return paths, records


def save_pt2(model: Any, input_shape: tuple[int, ...], path: Path,
             quantized: bool = False) -> Path:
    """Saves `model` as a torch.export program, with a dynamic batch dimension when possible.

    Args:
        quantized: `model` is a PT2E-converted graph; its quantize/dequantize ops are written
            as plain torch ops (`as_plain_torch`) so the archive loads without torchao.

    Raises:
        NotPortableError: a quantized graph with ops plain torch cannot express.
        ExportError: torch.export failed.
    """
    from toolkit.compress.steps.quantize.pt2e_flow import as_plain_torch, export_program

    if quantized:
        model = as_plain_torch(model)
    try:
        torch.export.save(export_program(model, tuple(input_shape)), str(path))
    except Exception as exc:  # torch.export raises many kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"{path}: torch.export failed: {first}") from exc
    return path


def _pt2_accuracy(path: Path, data: Dataset) -> float:
    """Test accuracy of the archive as torch.export.load gives it back (proves it loads)."""
    program = torch.export.load(str(path)).module()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(data.test_x), 256):
            x = data.test_x[start:start + 256]
            try:
                logits = program(x)
            except Exception:  # a program exported with a static batch: one sample at a time
                logits = torch.cat([program(x[i:i + 1]) for i in range(len(x))])
            correct += int((logits.argmax(1) == data.test_y[start:start + 256]).sum())
    return 100.0 * correct / len(data.test_x)


def _describe_ops(record: ArtifactRecord, path: Path, plan: Optional[QuantizationPlan],
                  say: Callable[[str], None]) -> None:
    """Fills the record's op histogram; for full-integer schemes, float islands and a warning.
    A `.pte` lists its calls instead; ops XNNPACK did not take get a warning."""
    if path.suffix == ".pte":
        _describe_pte(record, path, say)
        return
    record.ops = op_histogram(path)
    if plan is None or plan.scheme not in FULL_INTEGER:
        return
    islands = float_islands(path)
    record.float_islands = islands.to_json()
    if islands.any:
        record.note = f"kept in float: {islands.describe()}"
        say(f"warning: {path.name} ({plan.scheme}) is not fully int8: {islands.describe()}; "
            "each float island costs a DEQUANTIZE/QUANTIZE pair and splits the delegate")


def _describe_pte(record: ArtifactRecord, path: Path, say: Callable[[str], None]) -> None:
    from toolkit.export.pte import pte_calls, undelegated

    record.ops = pte_calls(path)
    left = undelegated(record.ops)
    if left:
        names = ", ".join(f"{n} ×{c}" for n, c in sorted(left.items(), key=lambda i: -i[1]))
        record.note = f"not delegated to XNNPACK: {names}"
        say(f"warning: {path.name}: {sum(left.values())} op(s) run on ExecuTorch's portable "
            f"kernels, outside XNNPACK ({names})")


def _record(fmt: str, path: Path, dtype: str) -> ArtifactRecord:
    return ArtifactRecord(format=fmt, path=path.name, sha256=file_sha256(path),
                          size_bytes=path.stat().st_size, huffman_bytes=file_huffman_bytes(path),
                          dtype=dtype)

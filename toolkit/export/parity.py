"""Host-side parity: an exported artifact against the torch model, within a per-dtype tolerance."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toolkit.errors import ExportError
from toolkit.export.host_runtime import run_artifact

# max |artifact - torch| allowed, relative to max(1, max |torch output|)
RELATIVE_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}
# int8 is judged by top-1 agreement (percent) instead; its max abs diff is reported
INT8_MIN_TOP1_AGREEMENT_PCT = 90.0


@dataclass
class ParityReport:
    """How an artifact's outputs compare with torch's on the same inputs.

    Attributes:
        artifact: the file checked.
        dtype: `fp32`, `fp16` or `int8` (chooses the tolerance).
        n: number of samples compared.
        max_abs_diff: largest absolute output difference.
        top1_agreement_pct: share of samples whose argmax agrees, in percent.
        tolerance: the bound applied (max abs diff for fp32/fp16, top-1 percent for int8).
        ok: whether the bound held.
    """

    artifact: str
    dtype: str
    n: int
    max_abs_diff: float
    top1_agreement_pct: float
    tolerance: float
    ok: bool

    def to_json(self) -> dict[str, Any]:
        """Returns the report as a plain dict."""
        return asdict(self)


def check_parity(
    artifact: Path,
    model: Any,
    inputs: torch.Tensor,
    dtype: str = "fp32",
    raise_on_failure: bool = True,
) -> ParityReport:
    """Runs `artifact` on the host runtime and `model` in torch on `inputs` and compares.

    Args:
        artifact: a `.tflite` or `.onnx` file.
        model: the torch model the artifact was made from (called one sample at a time, so
            static-batch graphs work).
        inputs: float inputs, batch first.
        dtype: `fp32` (max abs diff ≤ 1e-4 · max(1, max |torch|)), `fp16` (≤ 1e-2 · …) or
            `int8` (top-1 agreement ≥ 90%).
        raise_on_failure: raise ExportError when the bound fails (default) instead of
            returning a report with ok=False.

    Raises:
        ExportError: the bound failed (names the artifact and the difference).
    """
    with torch.no_grad():
        reference = torch.cat([model(inputs[i:i + 1]) for i in range(len(inputs))]).numpy()
    outputs = run_artifact(Path(artifact), inputs.detach().numpy())
    if outputs.shape != reference.shape:
        raise ExportError(f"{artifact}: output shape {outputs.shape} != torch {reference.shape}")
    diff = float(np.abs(outputs - reference).max()) if reference.size else 0.0
    agree = float(100.0 * np.mean(outputs.argmax(axis=1) == reference.argmax(axis=1)))
    if dtype == "int8":
        tolerance, ok = INT8_MIN_TOP1_AGREEMENT_PCT, agree >= INT8_MIN_TOP1_AGREEMENT_PCT
    else:
        scale = max(1.0, float(np.abs(reference).max()) if reference.size else 1.0)
        tolerance = RELATIVE_TOLERANCE[dtype] * scale
        ok = diff <= tolerance
    report = ParityReport(str(artifact), dtype, len(inputs), diff, agree, tolerance, ok)
    if not ok and raise_on_failure:
        bound = (f"top-1 agreement {agree:.1f}% < {tolerance:.0f}%" if dtype == "int8"
                 else f"max abs diff {diff:.3g} > {tolerance:.3g}")
        raise ExportError(f"{artifact}: {dtype} parity with torch failed: {bound} "
                          f"over {len(inputs)} samples")
    return report

"""Host-side parity: an exported artifact against the torch model, within a per-dtype tolerance."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from toolkit import quality
from toolkit.errors import ExportError
from toolkit.export.host_runtime import run_artifact


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
        dtype: `fp32`, `fp16` or `int8`: the tolerance of `toolkit.quality` (fp32/fp16 bound
            the max abs diff, int8 the top-1 agreement).
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
    judged = quality.parity(outputs, reference, dtype)
    agree = (judged.top1_agreement_pct if judged.top1_agreement_pct is not None
             else quality.top1_agreement_pct(outputs, reference))
    report = ParityReport(str(artifact), dtype, len(inputs), judged.max_abs_diff, agree,
                          judged.limit, judged.ok)
    if not judged.ok and raise_on_failure:
        raise ExportError(f"{artifact}: {dtype} parity with torch failed: {judged.describe()}")
    return report

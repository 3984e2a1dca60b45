"""The one owner of output quality: accuracy, top-1 agreement and parity tolerances.

Export parity (`toolkit.export.parity`), the gate (`toolkit.validate`), `evaluate`, `compress`
and `tune` all judge outputs here, so a tolerance or a definition changes in one place.

Tolerances by precision:
    fp32, fp16: the largest |outputs - reference| may be at most `RELATIVE_TOLERANCE[precision]`
        (1e-4, 1e-2) times max(1, max |reference|).
    int8: judged by top-1 agreement with the reference, at least
        `INT8_MIN_TOP1_AGREEMENT_PCT` (90 %); the largest difference is reported, not bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

PRECISIONS = ("fp32", "fp16", "int8")
# max |artifact - reference| allowed, relative to max(1, max |reference|)
RELATIVE_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}
# int8 is judged by top-1 agreement (percent) instead; its max abs diff is reported
INT8_MIN_TOP1_AGREEMENT_PCT = 90.0


def _array(values: Any) -> np.ndarray:
    """A float numpy array from numpy or torch values (torch is not imported here)."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def top1(outputs: Any) -> np.ndarray:
    """The predicted class of each sample: argmax over the last axis of (N, classes) outputs."""
    values = _array(outputs)
    return values.reshape(len(values), -1).argmax(axis=1)


def accuracy_pct(outputs: Any, labels: Any) -> float:
    """Top-1 accuracy in percent of (N, classes) outputs against N integer labels."""
    labels = _array(labels).reshape(-1)
    if len(labels) == 0:
        return 0.0
    return 100.0 * int(np.count_nonzero(top1(outputs) == labels)) / len(labels)


def top1_agreement_pct(outputs: Any, reference: Any) -> float:
    """Share of samples, in percent, whose predicted class matches the reference's."""
    return accuracy_pct(outputs, top1(reference))


def max_abs_diff(outputs: Any, reference: Any) -> float:
    """The largest |outputs - reference| (0 for empty arrays)."""
    a, b = _array(outputs).astype(np.float32), _array(reference).astype(np.float32)
    return float(np.abs(a.reshape(b.shape) - b).max()) if b.size else 0.0


def is_classifier_output(reference: Any) -> bool:
    """True for N x classes outputs (two axes, more than one class)."""
    values = _array(reference)
    return values.ndim == 2 and values.shape[1] > 1


def model_accuracy_pct(model: Any, inputs: Any, labels: Any, batch_size: int = 256) -> float:
    """Top-1 accuracy in percent of a torch model (eval mode, no grad) on inputs and labels."""
    import torch

    with torch.no_grad():
        outputs = torch.cat([model(inputs[i:i + batch_size])
                             for i in range(0, len(inputs), batch_size)])
    return accuracy_pct(outputs, labels)


@dataclass(frozen=True)
class Parity:
    """How outputs compare with a reference under a precision's tolerance.

    Attributes:
        precision: `fp32`, `fp16` or `int8` (chooses the bound).
        n: samples compared.
        max_abs_diff: largest absolute difference.
        top1_agreement_pct: share of samples whose class agrees, percent; None when the
            outputs are not N x classes.
        limit: the bound applied: a max abs diff (fp32/fp16) or a top-1 percent (int8).
        measured: the figure held against the limit.
        unit: `abs` (a difference) or `%` (an agreement).
        ok: whether the bound held.
    """

    precision: str
    n: int
    max_abs_diff: float
    top1_agreement_pct: Optional[float]
    limit: float
    measured: float
    unit: str
    ok: bool

    def describe(self) -> str:
        """One line: the figure, the comparison with the bound and the sample count."""
        if self.unit == "%":
            return (f"top-1 agreement {self.measured:.1f}% {'>=' if self.ok else '<'} "
                    f"{self.limit:.0f}% over {self.n} samples "
                    f"(max abs diff {self.max_abs_diff:.3g})")
        top1_text = ("" if self.top1_agreement_pct is None
                     else f", top-1 agreement {self.top1_agreement_pct:.1f}%")
        return (f"max abs diff {self.measured:.3g} {'<=' if self.ok else '>'} {self.limit:.3g} "
                f"({self.precision}) over {self.n} samples{top1_text}")


def parity(outputs: Any, reference: Any, precision: str) -> Parity:
    """Judges `outputs` against `reference` (same shape, batch first) for `precision`.

    Raises:
        ValueError: unknown precision, or int8 asked for outputs that are not N x classes
            (top-1 agreement needs classes).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    reference = _array(reference).astype(np.float32)
    outputs = _array(outputs).astype(np.float32).reshape(reference.shape)
    diff = max_abs_diff(outputs, reference)
    agree = top1_agreement_pct(outputs, reference) if is_classifier_output(reference) else None
    n = len(reference)
    if precision == "int8":
        if agree is None:
            raise ValueError("int8 parity is judged by top-1 agreement; the outputs are not "
                             f"N x classes (shape {reference.shape})")
        limit = INT8_MIN_TOP1_AGREEMENT_PCT
        return Parity(precision, n, diff, agree, limit, agree, "%", agree >= limit)
    scale = max(1.0, float(np.abs(reference).max()) if reference.size else 1.0)
    limit = RELATIVE_TOLERANCE[precision] * scale
    return Parity(precision, n, diff, agree, limit, diff, "abs", diff <= limit)

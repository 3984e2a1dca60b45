"""The one owner of output quality: metrics, accuracy, top-1 agreement and parity tolerances.

Metrics (`METRICS`, `get_metric`): each has a name, a direction (higher or lower is better),
units, what outputs it needs (checked before any work) and how it is computed from a model's
outputs and the targets; a user's `module:function` joins them with a declared direction.

Export parity (`toolkit.export.parity`), the gate (`toolkit.validate`), `evaluate`, `compress`
and `tune` all judge outputs here, so a tolerance or a definition changes in one place.

Tolerances by precision:
    fp32, fp16: the largest |outputs - reference| may be at most `RELATIVE_TOLERANCE[precision]`
        (1e-4, 1e-2) times max(1, max |reference|).
    int8: judged by top-1 agreement with the reference, at least
        `INT8_MIN_TOP1_AGREEMENT_PCT` (90 %); the largest difference is reported, not bounded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from toolkit.errors import ConfigError, SetupError

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


# --- metrics: how a model's quality is measured from its outputs and targets ---------------

HIGHER, LOWER = "higher", "lower"
DIRECTIONS = (HIGHER, LOWER)


@dataclass(frozen=True)
class Signature:
    """The shapes a metric meets, known before any work.

    Attributes:
        outputs: each output's shape, batch first (0 = a dimension not known in advance).
        targets: the targets' shape, batch first.
        integer_targets: whether the targets are integers (labels, ids) rather than values.
    """

    outputs: tuple[tuple[int, ...], ...]
    targets: tuple[int, ...]
    integer_targets: bool

    def describe(self) -> str:
        """`outputs 1x10, 1x4; targets 359 (integers)`."""
        outs = ", ".join("x".join(str(d) if d else "?" for d in s) or "scalar"
                         for s in self.outputs)
        kind = "integers" if self.integer_targets else "values"
        return (f"{len(self.outputs)} output{'s' if len(self.outputs) != 1 else ''} {outs}; "
                f"targets {'x'.join(str(d) for d in self.targets)} ({kind})")


@dataclass(frozen=True)
class Metric:
    """A measure of quality computed from a model's outputs and the targets.

    Attributes:
        name: what budgets, gates and reports call it (`top1`, `psnr`, `score.py:f1`).
        direction: `higher` or `lower` is better.
        units: `%`, `dB`, or '' for a plain number.
        compute_fn: (outputs, targets) -> float. Outputs are one numpy array (batch first) for
            a one-output model, else a tuple of arrays; targets a numpy array.
        needs: a short text of what the outputs must be (`one N x classes output`).
        fits: the reason the signature does not fit, or None when it does (None: any fits).
        user: whether it is a user's function (its exceptions are reported as its own).
    """

    name: str
    direction: str
    units: str
    compute_fn: Callable[[Any, Any], float]
    needs: str = ""
    fits: Optional[Callable[[Signature], Optional[str]]] = None
    user: bool = False

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ConfigError(f"metric {self.name!r}: direction {self.direction!r}; expected "
                              "'higher' or 'lower'")

    def check(self, signature: Signature) -> None:
        """Raises SetupError (one line: metric, need, the shapes) when the outputs don't fit."""
        reason = self.fits(signature) if self.fits else None
        if reason:
            raise SetupError(f"metric {self.name!r} needs {self.needs}, but {reason} "
                             f"({signature.describe()})")

    def compute(self, outputs: Any, targets: Any) -> float:
        """The metric of `outputs` (an array or a tuple of arrays) against `targets`.

        Raises:
            SetupError: a user's function raised (its exception in the line) or returned no
                number.
        """
        outs = (tuple(_array(o) for o in outputs) if isinstance(outputs, (tuple, list))
                else _array(outputs))
        try:
            value = self.compute_fn(outs, _array(targets))
            return float(value)
        except SetupError:
            raise
        except Exception as exc:  # noqa: BLE001 - a user's metric may raise anything
            if not self.user:
                raise
            from toolkit.models.checks import raised

            raise SetupError(f"metric {self.name!r} raised {raised(exc)}") from None

    def meets(self, value: float, bound: float) -> bool:
        """Whether `value` is on the good side of `bound` (>= for higher, <= for lower)."""
        return value >= bound if self.direction == HIGHER else value <= bound

    def better(self, a: float, b: float) -> bool:
        """Whether `a` is strictly better than `b`."""
        return a > b if self.direction == HIGHER else a < b

    def value_text(self, value: float) -> str:
        """`31.2 dB`: the value with the metric's units."""
        return f"{value:.4g}{' ' + self.units if self.units else ''}"

    def describe(self, value: float) -> str:
        """`psnr 31.2 dB`: the metric's name, value and units."""
        return f"{self.name} {self.value_text(value)}"

    def to_json(self) -> dict[str, str]:
        """{name, direction, units}."""
        return {"name": self.name, "direction": self.direction, "units": self.units}


def _single(outputs: Any) -> np.ndarray:
    if isinstance(outputs, tuple):
        if len(outputs) != 1:
            raise SetupError(f"expected one output, got {len(outputs)}")
        return outputs[0]
    return outputs


def _one_output(sig: Signature) -> Optional[str]:
    return None if len(sig.outputs) == 1 else f"the model has {len(sig.outputs)} outputs"


def _classes(shape: tuple[int, ...]) -> int:
    """Classes of an (N, C) or (N, C, 1, 1...) output; 0 when it is not one."""
    if len(shape) < 2 or any(d != 1 for d in shape[2:]):
        return 0
    return int(shape[1])


def _fits_scores(min_classes: int) -> Callable[[Signature], Optional[str]]:
    def fits(sig: Signature) -> Optional[str]:
        reason = _one_output(sig)
        if reason:
            return reason
        classes = _classes(sig.outputs[0])
        if classes < min_classes and not (sig.outputs[0][1:2] == (0,)):
            return f"the output has shape {'x'.join(map(str, sig.outputs[0]))}"
        if len(sig.targets) != 1 or not sig.integer_targets:
            return "the targets are not one integer label per sample"
        return None
    return fits


def _fits_same_shape(sig: Signature) -> Optional[str]:
    reason = _one_output(sig)
    if reason:
        return reason
    out = sig.outputs[0]
    same = len(out) == len(sig.targets) and all(o in (0, t) for o, t in
                                                 zip(out[1:], sig.targets[1:], strict=True))
    return None if same else "the output and the targets differ in shape"


def _fits_dense(sig: Signature) -> Optional[str]:
    """Per-position class scores: outputs N x C x *S (or N x *S x C for perplexity), targets
    N x *S integers."""
    reason = _one_output(sig)
    if reason:
        return reason
    if not sig.integer_targets:
        return "the targets are not integers"
    out = sig.outputs[0]
    if len(out) != len(sig.targets) + 1:
        return "the output does not have one more axis (the classes) than the targets"
    return None


def _top1_pct(outputs: Any, targets: np.ndarray) -> float:
    return accuracy_pct(_single(outputs), targets)


def _top5_pct(outputs: Any, targets: np.ndarray) -> float:
    values = _single(outputs)
    values = values.reshape(len(values), -1)
    labels = targets.reshape(-1)
    if len(labels) == 0:
        return 0.0
    best = np.argsort(-values, axis=1, kind="stable")[:, :5]
    return 100.0 * int(np.count_nonzero((best == labels[:, None]).any(axis=1))) / len(labels)


def _mse(outputs: Any, targets: np.ndarray) -> float:
    values = _single(outputs).astype(np.float64)
    return float(np.mean((values.reshape(targets.shape) - targets.astype(np.float64)) ** 2))


PSNR_PEAK = 1.0  # signals in [0, 1]


def _psnr(outputs: Any, targets: np.ndarray) -> float:
    error = _mse(outputs, targets)
    return float("inf") if error == 0 else float(10.0 * np.log10(PSNR_PEAK ** 2 / error))


def _f1(outputs: Any, targets: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    labels = targets.reshape(-1)
    return float(f1_score(labels, top1(_single(outputs)), average="macro", zero_division=0))


def _miou(outputs: Any, targets: np.ndarray) -> float:
    scores = _single(outputs)
    classes = scores.shape[1]
    predicted = scores.argmax(axis=1).reshape(-1)
    truth = targets.reshape(-1).astype(np.int64)
    keep = (truth >= 0) & (truth < classes)  # labels outside 0..C-1 (e.g. 255) are ignored
    confusion = np.bincount(truth[keep] * classes + predicted[keep],
                            minlength=classes * classes).reshape(classes, classes)
    union = confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
    present = union > 0
    return float((np.diag(confusion)[present] / union[present]).mean()) if present.any() else 0.0


def _perplexity(outputs: Any, targets: np.ndarray) -> float:
    logits = _single(outputs).astype(np.float64)
    logits = logits.reshape(-1, logits.shape[-1])
    ids = targets.reshape(-1).astype(np.int64)
    top = logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
    return float(np.exp(np.mean(log_norm - logits[np.arange(len(ids)), ids])))


def _fits_perplexity(sig: Signature) -> Optional[str]:
    reason = _fits_dense(sig)
    if reason:
        return reason
    out, tgt = sig.outputs[0], sig.targets
    return None if all(o in (0, t) for o, t in zip(out[1:-1], tgt[1:], strict=True)) else (
        "the output is not N x T x vocabulary over N x T targets")


def _fits_miou(sig: Signature) -> Optional[str]:
    reason = _fits_dense(sig)
    if reason:
        return reason
    out, tgt = sig.outputs[0], sig.targets
    return None if all(o in (0, t) for o, t in zip(out[2:], tgt[1:], strict=True)) else (
        "the output is not N x classes x H x W over N x H x W targets")


def _fits_detections(sig: Signature) -> Optional[str]:
    shapes = sig.outputs
    single = len(shapes) == 1 and len(shapes[0]) == 3 and shapes[0][2] in (0, 6)
    triple = (len(shapes) == 3 and len(shapes[0]) == 3 and shapes[0][2] in (0, 4)
              and len(shapes[1]) == 2 and len(shapes[2]) == 2)
    if not (single or triple):
        return "the outputs are not detections"
    if len(sig.targets) != 3 or sig.targets[2] != 5:
        return "the targets are not N x M x 5 boxes (x1, y1, x2, y2, class; class -1 = none)"
    return None


def _detections(outputs: Any) -> np.ndarray:
    """Detections as N x K x 6 (x1, y1, x2, y2, score, class)."""
    if isinstance(outputs, tuple) and len(outputs) == 3:
        boxes, scores, classes = outputs
        return np.concatenate([boxes, scores[..., None], classes[..., None]], axis=2)
    return _single(outputs)


def _coco_ap(outputs: Any, targets: np.ndarray) -> tuple[float, float]:
    """(AP@0.5, AP@0.5:0.95) by pycocotools' COCOeval over all classes, boxes in pixels."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    found = _detections(outputs).astype(np.float64)
    truth = targets.astype(np.float64)
    images, annotations, results, categories = [], [], [], set()
    for i, boxes in enumerate(truth):
        images.append({"id": i})
        for x1, y1, x2, y2, c in boxes[boxes[:, 4] >= 0]:
            w, h = x2 - x1, y2 - y1
            annotations.append({"id": len(annotations) + 1, "image_id": i, "iscrowd": 0,
                                "category_id": int(c), "bbox": [x1, y1, w, h], "area": w * h})
            categories.add(int(c))
        for x1, y1, x2, y2, s, c in found[i][found[i][:, 5] >= 0]:
            results.append({"image_id": i, "category_id": int(c), "score": float(s),
                            "bbox": [x1, y1, x2 - x1, y2 - y1]})
    if not annotations or not results:
        return 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations,
                      "categories": [{"id": c} for c in sorted(categories)]}
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return max(0.0, float(evaluator.stats[1])), max(0.0, float(evaluator.stats[0]))


def _needs_pycocotools(fits: Callable[[Signature], Optional[str]]
                       ) -> Callable[[Signature], Optional[str]]:
    def check(sig: Signature) -> Optional[str]:
        import importlib.util

        if importlib.util.find_spec("pycocotools") is None:
            return "pycocotools is not installed (pip install pycocotools)"
        return fits(sig)
    return check


_DETECTIONS = ("detections: one N x K x 6 output (x1, y1, x2, y2, score, class) or three "
               "(boxes N x K x 4, scores N x K, classes N x K), targets N x M x 5")
METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("top1", HIGHER, "%", _top1_pct, "one N x classes output and integer labels",
           _fits_scores(2)),
    Metric("top5", HIGHER, "%", _top5_pct, "one N x classes output (5 classes or more) and "
           "integer labels", _fits_scores(5)),
    Metric("f1", HIGHER, "", _f1, "one N x classes output and integer labels (macro F1)",
           _fits_scores(2)),
    Metric("mse", LOWER, "", _mse, "one output of the targets' shape", _fits_same_shape),
    Metric("psnr", HIGHER, "dB", _psnr, "one output of the targets' shape (signals in [0, 1])",
           _fits_same_shape),
    Metric("miou", HIGHER, "", _miou, "one N x classes x H x W output and N x H x W integer "
           "labels", _fits_miou),
    Metric("perplexity", LOWER, "", _perplexity, "one N x T x vocabulary output and N x T "
           "integer ids", _fits_perplexity),
    Metric("map50", HIGHER, "", lambda o, t: _coco_ap(o, t)[0], _DETECTIONS,
           _needs_pycocotools(_fits_detections)),
    Metric("map50_95", HIGHER, "", lambda o, t: _coco_ap(o, t)[1], _DETECTIONS,
           _needs_pycocotools(_fits_detections)),
)}


def get_metric(spec: str, direction: Optional[str] = None, units: str = "") -> Metric:
    """A built-in metric by name, or a user's `module:function` / `path/to/file.py:function`.

    Args:
        spec: `top1`, `top5`, `f1`, `mse`, `psnr`, `miou`, `perplexity`, `map50`, `map50_95`,
            or a function spec `(outputs, targets) -> float`; a file's folder is importable
            while it loads (sibling modules), as for models.
        direction: `higher` / `lower`; required for a user's function, and must agree with a
            built-in one's if given.
        units: a user metric's units ('' by default).

    Raises:
        ConfigError: unknown name, a user metric without a direction, or a direction that
            contradicts a built-in metric's.
        ModelFileError / SetupError: the user's file or function cannot be imported.
    """
    if spec in METRICS:
        metric = METRICS[spec]
        if direction and direction != metric.direction:
            raise ConfigError(f"metric {spec!r} is {metric.direction}-is-better; "
                              f"--metric-direction {direction} contradicts it")
        return metric
    if ":" not in spec:
        raise ConfigError(f"metric {spec!r}: expected one of {', '.join(METRICS)} or a "
                          "'module:function' / 'file.py:function' returning a float")
    if direction not in DIRECTIONS:
        raise ConfigError(f"metric {spec!r}: a user metric needs --metric-direction higher "
                          "or lower")
    from toolkit.models.user import resolve_callable

    return Metric(spec, direction, units, resolve_callable(spec, "metric"),
                  "outputs its function accepts", None, user=True)


def metric_names() -> tuple[str, ...]:
    """The built-in metrics' names."""
    return tuple(METRICS)

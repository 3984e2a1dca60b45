"""Does this model fit this dataset? Checked once, up front, before any work.

`check_setup` runs one forward pass on a zero input of the model's input shape and compares
the model with the dataset: the input shape with the samples' shape, the number of outputs
with the labels. Every mismatch is a `SetupError` of one line naming the model, the dataset,
the shapes and what was expected. `compress`, `tune`, `evaluate` and `validate` all call it.
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from typing import Any, Optional

import torch

from toolkit.errors import SetupError


def shape_text(shape: Sequence[int]) -> str:
    """(1, 3, 96, 96) → '1x3x96x96'."""
    return "x".join(str(int(d)) for d in shape)


def raised(exc: BaseException) -> str:
    """`ValueError: message (net.py:12)`: the exception's type, first line and origin."""
    text = str(exc).strip().splitlines()
    where = ""
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    if frames:
        last = frames[-1]
        where = f" ({last.filename.rsplit('/', 1)[-1]}:{last.lineno})"
    return f"{type(exc).__name__}: {text[0] if text else ''}{where}"


def probe_outputs(module: Any, input_shape: Sequence[int], name: str,
                  classifier: bool = True) -> torch.Tensor:
    """The model's output for a zero input of `input_shape`, as (batch, outputs).

    Args:
        classifier: require a tensor of class scores (batch, classes); False only requires
            the forward pass to succeed (and returns its output as it is).

    Raises:
        SetupError: the forward pass failed, or its output is not (batch, classes).
    """
    shape = tuple(int(d) for d in input_shape)
    try:
        with torch.no_grad():
            out = module(torch.zeros(shape))
    except Exception as exc:  # noqa: BLE001 - any failure of the user's forward is a setup error
        raise SetupError(
            f"model {name!r}: a forward pass on input shape {shape_text(shape)} failed: "
            f"{raised(exc)}; expected the model's input shape with the batch dimension "
            "(--input-shape N,C,H,W)"
        ) from None
    if not classifier:
        return out
    if not isinstance(out, torch.Tensor):
        raise SetupError(f"model {name!r}: returned {type(out).__name__} for input shape "
                         f"{shape_text(shape)}; expected a tensor of class scores (batch, classes)")
    if out.ndim < 2 or out.shape[0] != shape[0]:
        raise SetupError(
            f"model {name!r}: output shape {shape_text(out.shape)} for input shape "
            f"{shape_text(shape)}; expected (batch, classes) with batch {shape[0]} — is the "
            "input shape's first dimension the batch (--input-shape N,C,H,W)?"
        )
    return out.reshape(out.shape[0], -1)


def check_labels(dataset: Any, classes: int, model_name: str) -> None:
    """Labels must lie in 0..classes-1.

    Raises:
        SetupError: a label outside that range (names both ranges).
    """
    labels = torch.cat([dataset.train_y.reshape(-1), dataset.test_y.reshape(-1)])
    if labels.numel() == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= classes:
        raise SetupError(
            f"dataset {dataset.name!r}: labels span {low}–{high} but model {model_name!r} has "
            f"{classes} outputs; expected labels 0–{classes - 1}"
        )


def check_sample_shape(model_shape: Sequence[int], dataset: Any, model_name: str,
                       what: str = "model") -> None:
    """The dataset's samples must have the model's input shape without its batch dimension.

    Raises:
        SetupError: they differ (names both shapes; suggests --data for the default dataset).
    """
    expected = tuple(int(d) for d in model_shape[1:])
    got = tuple(int(d) for d in dataset.input_shape)
    if expected == got:
        return
    hint = (f"pass --data with {shape_text(expected)} samples"
            if dataset.name == "digits" else
            f"expected {shape_text(expected)} samples (edgeloop never resizes inputs)")
    raise SetupError(
        f"{what} {model_name!r} takes inputs of shape {shape_text(model_shape)} but dataset "
        f"{dataset.name!r} holds {shape_text(got)} samples; {hint}"
    )


def check_setup(loaded: Any, dataset: Optional[Any] = None) -> int:
    """Checks a loaded model (and the dataset it will meet) before any work.

    Args:
        loaded: a `LoadedModel` (module, input shape with batch, name).
        dataset: the `Dataset`, or None to check the model alone.

    Returns:
        The model's number of outputs (classes); 0 when checked without a dataset, where any
        output the forward pass gives is accepted.

    Raises:
        SetupError: the forward pass fails on the input shape; with a dataset, also: the
            output is not (batch, classes), the samples' shape differs from the model's, or a
            label is out of range.
    """
    if dataset is None:
        probe_outputs(loaded.module, loaded.input_shape, loaded.name, classifier=False)
        return 0
    outputs = probe_outputs(loaded.module, loaded.input_shape, loaded.name)
    classes = int(outputs.shape[1])
    check_sample_shape(loaded.input_shape, dataset, loaded.name)
    check_labels(dataset, classes, loaded.name)
    return classes

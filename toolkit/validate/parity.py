"""Output parity on the device: reference inputs/outputs, the artifact's precision.

The tolerances are `toolkit.quality`'s, the same export parity applies on the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from toolkit import quality
from toolkit.errors import ConfigError, ModelFileError

PRECISIONS = ("auto", *quality.PRECISIONS)
DEFAULT_SAMPLES = 64


@dataclass(frozen=True)
class Reference:
    """Float inputs (batch first) and the outputs the artifact should reproduce."""

    inputs: np.ndarray
    outputs: np.ndarray
    source: str


@dataclass(frozen=True)
class ParityOutcome:
    """How the device's outputs compare with the reference."""

    passed: bool
    message: str
    measured: float
    limit: float
    unit: str
    max_abs_diff: float
    top1_agreement_pct: Optional[float]


def reference_from_npz(path: Path) -> Reference:
    """Loads `inputs` and `outputs` arrays (batch first) from an .npz file."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such reference file")
    with np.load(path) as data:
        missing = [k for k in ("inputs", "outputs") if k not in data.files]
        if missing:
            raise ConfigError(f"{path}: {missing[0]}: missing array; expected 'inputs' and "
                              f"'outputs' (batch first), found {sorted(data.files)}")
        inputs, outputs = np.asarray(data["inputs"], np.float32), np.asarray(data["outputs"])
    if len(inputs) != len(outputs) or len(inputs) == 0:
        raise ConfigError(f"{path}: inputs ({len(inputs)}) and outputs ({len(outputs)}) must "
                          "hold the same, non-zero number of samples")
    return Reference(inputs, outputs.astype(np.float32), str(path))


def reference_from_model(spec: str, data: Optional[str] = None,
                         n: int = DEFAULT_SAMPLES, seed: int = 0) -> Reference:
    """Runs a torch reference model (toolkit.models spec) on the host.

    Args:
        spec: Model spec for toolkit.models.load_model ("digits-cnn", "net.py:build", ".pt2").
        data: Dataset spec; its first `n` test inputs are used. None: seeded normal inputs of
            the model's input shape.
        n: Number of samples (default 64).
        seed: Seed of the random inputs (default 0).
    """
    import torch

    from toolkit.models import load_model
    from toolkit.models.checks import check_setup

    loaded = load_model(spec)
    if data:
        from toolkit.data import load_dataset

        dataset = load_dataset(data)
        if dataset.has_labels:
            check_setup(loaded, dataset)  # shapes and labels, in one line, before any device
        else:  # targets are values or masks: a metric, not the labels, judges the outputs
            from toolkit.models.checks import check_sample_shape

            check_setup(loaded)
            check_sample_shape(loaded.input_shape, dataset, loaded.name)
        inputs = dataset.test_x[:n].numpy().astype(np.float32)
    else:
        check_setup(loaded)
        rng = np.random.default_rng(seed)
        inputs = rng.standard_normal((n, *loaded.input_shape[1:])).astype(np.float32)
    with torch.no_grad():
        outputs = torch.cat([loaded.module(torch.from_numpy(inputs[i:i + 1]))
                             for i in range(len(inputs))]).numpy()
    return Reference(inputs, outputs.astype(np.float32), f"model {spec}")


def artifact_precision(path: Path) -> str:
    """"int8" when the artifact holds int8/uint8 tensors, "fp16" for float16, else "fp32"."""
    path = Path(path)
    if path.suffix == ".tflite":
        from ai_edge_litert.interpreter import Interpreter

        dtypes = {np.dtype(t["dtype"]) for t in Interpreter(str(path)).get_tensor_details()}
    elif path.suffix == ".onnx":
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        names = {onnx.TensorProto.DataType.Name(t.data_type) for t in model.graph.initializer}
        dtypes = {np.dtype({"INT8": "int8", "UINT8": "uint8", "FLOAT16": "float16"}.get(n, "f4"))
                  for n in names}
    else:
        return "fp32"
    if dtypes & {np.dtype("int8"), np.dtype("uint8")}:
        return "int8"
    return "fp16" if np.dtype("float16") in dtypes else "fp32"


def compare(outputs: np.ndarray, reference: np.ndarray, precision: str) -> ParityOutcome:
    """Compares the device's outputs with the reference under the precision's tolerance."""
    if precision == "int8" and not quality.is_classifier_output(reference):
        raise ConfigError("int8 parity is judged by top-1 agreement; the outputs are not "
                          f"N x classes (shape {reference.shape}); pass --precision fp16")
    judged = quality.parity(outputs, reference, precision)
    return ParityOutcome(judged.ok, judged.describe(), judged.measured, judged.limit,
                         judged.unit, judged.max_abs_diff, judged.top1_agreement_pct)

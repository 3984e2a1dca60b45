"""On-device accuracy: the test split run through the agent's Infer, optionally against torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from toolkit import quality
from toolkit.data import Dataset
from toolkit.errors import AgentError, SetupError


@dataclass
class EvaluationResult:
    """Accuracy measured on the device's own arithmetic.

    Attributes:
        artifact: the model file evaluated.
        model_sha256: its sha256 (as held by the agent).
        device_id: the device that ran it.
        runtime: the runtime asked for ('' = the agent's choice for the file type).
        n: test samples run.
        batch_size: samples per Infer call.
        accuracy_pct: top-1 accuracy on the device, in percent.
        max_abs_diff: largest |device output − torch output|, when a reference model was given.
        top1_agreement_pct: share of samples where device and torch agree on the class, in
            percent, when a reference model was given.
    """

    artifact: str
    model_sha256: str
    device_id: str
    runtime: str
    n: int
    batch_size: int
    accuracy_pct: float
    max_abs_diff: Optional[float] = None
    top1_agreement_pct: Optional[float] = None

    def to_json(self) -> dict[str, Any]:
        """Plain dict; `accuracy` is the on-device accuracy in percent."""
        data = {
            "artifact": self.artifact,
            "model_sha256": self.model_sha256,
            "device_id": self.device_id,
            "runtime": self.runtime,
            "n": self.n,
            "batch_size": self.batch_size,
            "accuracy": self.accuracy_pct,
        }
        if self.max_abs_diff is not None:
            data["max_abs_diff"] = self.max_abs_diff
            data["top1_agreement_pct"] = self.top1_agreement_pct
        return data


def evaluate_on_device(
    artifact: Path,
    data: Dataset,
    client: Any,
    reference_model: Optional[torch.nn.Module] = None,
    runtime: str = "",
    batch_size: int = 64,
) -> EvaluationResult:
    """Pushes `artifact` and runs `data`'s test split through the device's Infer in batches.

    Args:
        artifact: a `.tflite`, `.onnx` or `.pt2` file.
        data: the dataset; its test split is used.
        client: a connected `DeviceClient`.
        reference_model: the torch model to compare outputs with (max abs diff, top-1
            agreement); None skips the comparison.
        runtime: runtime on the device; '' lets the agent pick by file type.
        batch_size: samples per Infer call. Default 64.

    Raises:
        SetupError: the artifact's input shape differs from the data's samples (nothing is
            ever resized), or its outputs cannot hold the labels; checked before the push.
        AgentError: the agent failed or returned outputs of the wrong size.
    """
    artifact = Path(artifact)
    check_artifact_fits(artifact, data)
    sha = client.push(artifact)
    x = data.test_x.numpy().astype(np.float32)
    outputs = []
    for start in range(0, len(x), batch_size):
        (out, *_) = client.infer(sha, [x[start : start + batch_size]], runtime=runtime)
        outputs.append(np.asarray(out, dtype=np.float32).reshape(len(x[start:start + batch_size]),
                                                                 -1))
    device_out = np.concatenate(outputs)
    if len(device_out) != len(x):
        raise AgentError(f"{artifact}: device returned {len(device_out)} outputs for {len(x)}")
    labels = data.test_y.numpy()
    result = EvaluationResult(
        artifact=str(artifact),
        model_sha256=sha,
        device_id=_device_id(client),
        runtime=runtime,
        n=len(x),
        batch_size=batch_size,
        accuracy_pct=quality.accuracy_pct(device_out, labels),
    )
    if reference_model is not None:
        from toolkit.models.train import predict

        reference = predict(reference_model, data.test_x).numpy().reshape(len(x), -1)
        result.max_abs_diff = quality.max_abs_diff(device_out, reference)
        result.top1_agreement_pct = quality.top1_agreement_pct(device_out, reference)
    return result


def artifact_io(path: Path) -> tuple[tuple[int, ...], int]:
    """The artifact's first input shape (batch first; 0 = dynamic) and its number of outputs
    per sample (0 = unknown), read on the host without running it."""
    path = Path(path)
    if path.suffix == ".tflite":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path))
        inp = interpreter.get_input_details()[0]
        out = interpreter.get_output_details()[0]
        signature = inp.get("shape_signature", inp["shape"])
        shape = tuple(max(0, int(d)) for d in signature)
        return shape, int(np.prod(out["shape"][1:])) if len(out["shape"]) > 1 else 0
    if path.suffix == ".onnx":
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        initializers = {t.name for t in graph.initializer}
        first = next(i for i in graph.input if i.name not in initializers)

        def dims(value) -> tuple[int, ...]:  # noqa: ANN001
            return tuple(int(d.dim_value) if d.HasField("dim_value") else 0
                         for d in value.type.tensor_type.shape.dim)

        out_dims = dims(graph.output[0])
        classes = int(np.prod(out_dims[1:])) if len(out_dims) > 1 and all(out_dims[1:]) else 0
        return dims(first), classes
    if path.suffix == ".pt2":
        from toolkit.models.user import load_exported

        _, shape = load_exported(path)
        return tuple(shape), 0
    return (), 0


def check_artifact_fits(artifact: Path, data: Dataset) -> None:
    """The artifact's input must take the data's samples as they are, and its outputs hold
    every label: one line naming both, before any work (evaluate never resizes inputs).

    Raises:
        SetupError: a shape or class-count mismatch.
    """
    from toolkit.models.checks import check_labels, shape_text

    shape, classes = artifact_io(artifact)
    if shape:
        expected = shape[1:]
        got = tuple(int(d) for d in data.input_shape)
        fits = len(expected) == len(got) and all(e in (0, g) for e, g in zip(expected, got))
        if not fits:
            raise SetupError(
                f"artifact {str(artifact)!r} takes inputs of shape {shape_text(shape)} but "
                f"dataset {data.name!r} holds {shape_text(got)} samples; expected "
                f"{shape_text(expected)} samples (edgeloop never resizes inputs)")
    if classes:
        check_labels(data, classes, str(artifact))


def _device_id(client: Any) -> str:
    try:
        return client.info().device_id
    except (AgentError, AttributeError):
        return ""

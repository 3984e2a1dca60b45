"""On-device accuracy: the test split run through the agent's Infer, optionally against torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from toolkit.data import Dataset
from toolkit.errors import AgentError


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
        AgentError: the agent failed or returned outputs of the wrong size.
    """
    artifact = Path(artifact)
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
        accuracy_pct=float(100.0 * np.mean(device_out.argmax(axis=1) == labels)),
    )
    if reference_model is not None:
        from toolkit.models.train import predict

        reference = predict(reference_model, data.test_x).numpy().reshape(len(x), -1)
        result.max_abs_diff = float(np.abs(device_out - reference).max())
        agree = np.mean(device_out.argmax(axis=1) == reference.argmax(axis=1))
        result.top1_agreement_pct = float(100.0 * agree)
    return result


def _device_id(client: Any) -> str:
    try:
        return client.info().device_id
    except (AgentError, AttributeError):
        return ""

"""On-device quality: the test split run through the agent's Infer, scored by top-1 accuracy
or any metric of `toolkit.quality`, optionally against a host reference."""

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
        accuracy_pct: top-1 accuracy on the device, in percent; None when the targets are
            not class labels.
        max_abs_diff: largest |device output − torch output|, when a reference model was given.
        top1_agreement_pct: share of samples where device and torch agree on the class, in
            percent, when a reference model was given and the outputs are N x classes.
        metric: the metric asked for (`quality.Metric`), if any.
        metric_device: its value on the device's outputs.
        metric_host: its value on the host reference's outputs (None: no host reference).
        metric_host_basis: what the host reference was (`reference model net.py:build`,
            `host runtime` = the same artifact run on this machine).
    """

    artifact: str
    model_sha256: str
    device_id: str
    runtime: str
    n: int
    batch_size: int
    accuracy_pct: Optional[float]
    max_abs_diff: Optional[float] = None
    top1_agreement_pct: Optional[float] = None
    metric: Optional[quality.Metric] = None
    metric_device: Optional[float] = None
    metric_host: Optional[float] = None
    metric_host_basis: str = ""

    def to_json(self) -> dict[str, Any]:
        """Plain dict; `accuracy` is the on-device accuracy in percent (when the targets are
        labels); a metric's figures are under its name: {device, host, host_basis, direction,
        units}, and `metric` names it."""
        data: dict[str, Any] = {
            "artifact": self.artifact,
            "model_sha256": self.model_sha256,
            "device_id": self.device_id,
            "runtime": self.runtime,
            "n": self.n,
            "batch_size": self.batch_size,
        }
        if self.accuracy_pct is not None:
            data["accuracy"] = self.accuracy_pct
        if self.max_abs_diff is not None:
            data["max_abs_diff"] = self.max_abs_diff
            data["top1_agreement_pct"] = self.top1_agreement_pct
        if self.metric is not None:
            data["metric"] = self.metric.name
            data[self.metric.name] = {
                "device": _finite(self.metric_device), "host": _finite(self.metric_host),
                "host_basis": self.metric_host_basis or None, **self.metric.to_json()}
            del data[self.metric.name]["name"]
        return data


def _finite(value: Optional[float]) -> Any:
    """JSON has no infinity: an exact match's PSNR is written as the string 'inf'."""
    return value if value is None or np.isfinite(value) else str(value)


def evaluate_on_device(
    artifact: Path,
    data: Dataset,
    client: Any,
    reference_model: Optional[torch.nn.Module] = None,
    runtime: str = "",
    batch_size: int = 64,
    metric: Optional[quality.Metric] = None,
    reference_name: str = "",
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
        metric: a metric (`quality.get_metric`) to score the device's outputs with, and the
            host reference's: `reference_model` if given, else the artifact run on the host
            (one-output artifacts). None: top-1 accuracy only.
        reference_name: how to name `reference_model` in the result.

    Raises:
        SetupError: the artifact's input shape differs from the data's samples (nothing is
            ever resized), its outputs cannot hold the labels, or the metric does not fit
            its outputs; checked before the push. A user's metric that raises.
        AgentError: the agent failed or returned outputs of the wrong size.
    """
    artifact = Path(artifact)
    check_artifact_fits(artifact, data, metric)
    sha, device_outs = infer_dataset(artifact, data, client, runtime, batch_size)
    x = data.test_x.numpy().astype(np.float32)
    device_out = device_outs[0].reshape(len(x), -1)
    labels = data.test_y.numpy()
    classes = data.has_labels and quality.is_classifier_output(device_out)
    result = EvaluationResult(
        artifact=str(artifact),
        model_sha256=sha,
        device_id=_device_id(client),
        runtime=runtime,
        n=len(x),
        batch_size=batch_size,
        accuracy_pct=quality.accuracy_pct(device_out, labels) if classes else None,
    )
    reference = None
    if reference_model is not None:
        from toolkit.models.train import predict

        with torch.no_grad():
            reference = predict(reference_model, data.test_x)
        reference = np.asarray(reference.numpy() if hasattr(reference, "numpy") else reference)
        result.max_abs_diff = quality.max_abs_diff(device_outs[0], reference)
        if quality.is_classifier_output(device_out):
            result.top1_agreement_pct = quality.top1_agreement_pct(
                device_out, reference.reshape(len(x), -1))
    if metric is not None:
        result.metric = metric
        result.metric_device = metric.compute(as_metric_outputs(device_outs), labels)
        if reference is not None:
            result.metric_host = metric.compute(reference, labels)
            result.metric_host_basis = f"reference model {reference_name}".strip()
        elif len(device_outs) == 1:
            from toolkit.export.host_runtime import run_artifact

            result.metric_host = metric.compute(run_artifact(artifact, x), labels)
            result.metric_host_basis = "host runtime"
    return result


def infer_dataset(artifact: Path, data: Dataset, client: Any, runtime: str = "",
                  batch_size: int = 64) -> tuple[str, list[np.ndarray]]:
    """Pushes `artifact` and runs the test split through Infer in batches.

    Returns:
        The model's sha256 on the device, and each output over the whole split (batch first).

    Raises:
        AgentError: the agent failed or returned outputs for the wrong number of samples.
    """
    sha = client.push(artifact)
    x = data.test_x.numpy().astype(np.float32)
    batches: list[list[np.ndarray]] = []
    for start in range(0, len(x), batch_size):
        outs = client.infer(sha, [x[start : start + batch_size]], runtime=runtime)
        batches.append([np.asarray(o, dtype=np.float32) for o in outs])
    device_outs = [np.concatenate(parts) for parts in zip(*batches, strict=True)]
    if not device_outs or len(device_outs[0]) != len(x):
        got = len(device_outs[0]) if device_outs else 0
        raise AgentError(f"{artifact}: device returned {got} outputs for {len(x)}")
    return sha, device_outs


def as_metric_outputs(outs: list[np.ndarray]) -> Any:
    """One output as an array, several as a tuple (what a metric receives)."""
    return outs[0] if len(outs) == 1 else tuple(outs)


def artifact_outputs(path: Path) -> tuple[tuple[int, ...], ...]:
    """Every output's shape (batch first; 0 = dynamic), read on the host without running the
    artifact; () when the format does not tell (`.pt2`)."""
    path = Path(path)
    if path.suffix == ".tflite":
        from ai_edge_litert.interpreter import Interpreter

        details = Interpreter(model_path=str(path)).get_output_details()
        return tuple(tuple(max(0, int(d)) for d in o.get("shape_signature", o["shape"]))
                     for o in details)
    if path.suffix == ".onnx":
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        return tuple(tuple(int(d.dim_value) if d.HasField("dim_value") else 0
                           for d in o.type.tensor_type.shape.dim) for o in graph.output)
    return ()


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


def check_artifact_fits(artifact: Path, data: Dataset,
                        metric: Optional[quality.Metric] = None) -> None:
    """The artifact's input must take the data's samples as they are, its outputs hold every
    label (class-label data), and the metric fit its outputs: one line naming both, before
    any work (evaluate never resizes inputs).

    Raises:
        SetupError: a shape, class-count or metric mismatch.
    """
    from toolkit.models.checks import check_labels, shape_text

    shape, classes = artifact_io(artifact)
    if shape:
        expected = shape[1:]
        got = tuple(int(d) for d in data.input_shape)
        fits = len(expected) == len(got) and all(
            e in (0, g) for e, g in zip(expected, got, strict=True))
        if not fits:
            raise SetupError(
                f"artifact {str(artifact)!r} takes inputs of shape {shape_text(shape)} but "
                f"dataset {data.name!r} holds {shape_text(got)} samples; expected "
                f"{shape_text(expected)} samples (edgeloop never resizes inputs)")
    outputs = artifact_outputs(artifact) if metric is not None else ()
    if metric is not None and outputs:
        targets = tuple(int(d) for d in data.test_y.shape)
        metric.check(quality.Signature(outputs, targets, not data.test_y.is_floating_point()))
    if classes and data.has_labels and (metric is None or metric.name in _LABEL_METRICS):
        check_labels(data, classes, str(artifact))


_LABEL_METRICS = ("top1", "top5", "f1")


def _device_id(client: Any) -> str:
    try:
        return client.info().device_id
    except (AgentError, AttributeError):
        return ""

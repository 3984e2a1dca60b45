"""An `.onnx` file as `compress`'s input, quantized by ONNX Runtime's own tools.

`quantize` runs `onnxruntime.quantization`: `quant_pre_process` (shape inference and graph
optimisation), then `quantize_static` (QDQ, int8 weights per channel or per tensor, uint8
activations, ranges calibrated on `--data`'s training inputs through a `CalibrationDataReader`)
or `quantize_dynamic`; `fp16` uses ONNX Runtime's float16 converter (`onnxruntime.transformers.
float16`, the converter `onnxconverter-common` ships, without another dependency). The steps
that change weights in PyTorch are unavailable: converting the graph back needs `onnx2torch`,
which imports torchvision, and torchvision does not import beside torch 2.13 here.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import numpy as np

from toolkit.compress.card import ArtifactRecord
from toolkit.compress.formats.base import EntryFormat, FileCard, FileCompression
from toolkit.compress.recipe import Recipe
from toolkit.errors import ConfigError, ExportError, ModelFileError, SetupError

_NO_TORCH = ("needs the graph in PyTorch, and onnx2torch (the converter) imports torchvision, "
             "which does not import beside torch 2.13")
UNAVAILABLE = {
    "prune": _NO_TORCH,
    "finetune": _NO_TORCH,
    "distill": _NO_TORCH,
    "lowrank": _NO_TORCH,
    "cluster": _NO_TORCH,
    "replace": _NO_TORCH,
    "sensitivity": _NO_TORCH,
    "huffman": "codes a PyTorch model's weight tensors; an ONNX file's are not read back",
}
SCHEME_UNAVAILABLE = {
    "qat": "quantization-aware training " + _NO_TORCH,
    "mixed": "per-layer precision is chosen by a PyTorch sensitivity pass, " + _NO_TORCH,
}
OBSERVERS = {"minmax": "MinMax", "percentile": "Percentile"}
MIN_OPSET = 10  # ONNX Runtime's quantizer handles ai.onnx opset 10 and later
QUANTIZER_DOMAINS = ("", "ai.onnx", "com.microsoft")
CALIBRATION_BATCH = 32
PRECISION = {"int8-static": "int8", "int8-dynamic": "int8", "fp16": "fp16"}


class OnnxEntry(EntryFormat):
    """`.onnx` files: `quantize` (int8-static, int8-dynamic, fp16) by ONNX Runtime."""

    name = "onnx"
    unavailable = UNAVAILABLE

    def step_refusal(self, step: Any) -> Optional[str]:
        if step.key != "quantize":
            return None
        params = step.params
        if params.scheme in SCHEME_UNAVAILABLE:
            return f"scheme {params.scheme}: {SCHEME_UNAVAILABLE[params.scheme]}"
        if params.scheme == "int8-static" and params.observer not in OBSERVERS:
            return (f"observer {params.observer}: ONNX Runtime's calibrators offer "
                    f"{' and '.join(OBSERVERS)}")
        return None

    def compress(self, path: Path, recipe: Recipe, data: Any, out: Path,
                 metric: Optional[str], log: Callable[[str], None]) -> FileCompression:
        from toolkit.data import load_dataset
        from toolkit.hash_index import file_sha256

        self.check_recipe(recipe)
        path = Path(path)
        model_input = inspect_onnx(path)
        dataset = load_dataset("digits" if data is None else data)
        _check_fits(path, model_input, dataset.input_shape)
        scorer = _metric(metric)
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        dst = out / "model.onnx"
        steps: list[dict[str, Any]] = []
        precision = "fp32"
        with tempfile.TemporaryDirectory(prefix="edgeloop-onnx-") as tmp:
            current = path
            for index, step in enumerate(recipe.steps, start=1):
                started = time.perf_counter()
                figures = _quantize(current, dst, step.params, dataset, model_input, Path(tmp))
                precision = PRECISION[step.params.scheme]
                current = dst
                seconds = round(time.perf_counter() - started, 3)
                steps.append({"key": step.key, "params": recipe.entries[index - 1][step.key],
                              "figures": figures, "seconds": seconds})
                log(f"[{index}/{len(recipe.steps)}] {step.key}: done in {seconds:.1f} s")
            if current == path:  # an empty recipe: the file unchanged
                dst.write_bytes(path.read_bytes())
        check = _check(path, dst, dataset, precision, scorer)
        log(f"host check: {check['summary']}")
        from toolkit import __version__
        from toolkit.compress.metrics import file_huffman_bytes
        from toolkit.export.ops import op_histogram

        artifact = ArtifactRecord(
            format="onnx", path=dst.name, sha256=file_sha256(dst), size_bytes=dst.stat().st_size,
            huffman_bytes=file_huffman_bytes(dst), dtype=precision,
            host_accuracy_pct=check.get("accuracy_after_pct"), parity=check.get("parity"),
            ops=op_histogram(dst), note=check["summary"])
        card = FileCard(
            model=str(path), format=self.name, dataset=dataset.name,
            inputs={model_input.name: list(model_input.shape)},
            recipe=recipe.entries, parent_sha256=file_sha256(path),
            parent_size_bytes=onnx_bytes(path), steps=steps, artifacts={"onnx": artifact},
            unavailable_steps=dict(UNAVAILABLE, **{f"quantize.{k}": v
                                                   for k, v in SCHEME_UNAVAILABLE.items()}),
            check=check, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            toolkit_version=__version__)
        card_path = card.save(out / "card.json")
        log(f"card written to {card_path}")
        return FileCompression(artifacts={"onnx": dst}, card=card, card_path=card_path)


ENTRY = OnnxEntry()


class ModelInput:
    """The one input of an ONNX graph: name, shape (strings/None for symbolic dims)."""

    def __init__(self, name: str, shape: list[Any]) -> None:
        self.name, self.shape = name, shape

    @property
    def fixed_batch(self) -> Optional[int]:
        """The first dimension when the file fixes it, else None."""
        first = self.shape[0] if self.shape else None
        return first if isinstance(first, int) and first > 0 else None


def inspect_onnx(path: Path) -> ModelInput:
    """Reads the file and checks, before any work, what the quantizer needs.

    Raises:
        ModelFileError: no such file, or not an ONNX model.
        ConfigError: an opset the quantizer cannot handle, a node in a domain it does not know
            (named), a node ONNX Runtime cannot load (its message names it), or not one input.
    """
    import onnx

    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several kinds
        raise ModelFileError(f"{path}: not an ONNX model: {exc}") from None
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    opset = opsets.get("ai.onnx", 0)
    if opset < MIN_OPSET:
        raise ConfigError(f"{path}: opset {opset}: ONNX Runtime's quantizer needs ai.onnx opset "
                          f">= {MIN_OPSET} (re-export with a newer opset_version)")
    for node in model.graph.node:
        if node.domain not in QUANTIZER_DOMAINS:
            raise ConfigError(f"{path}: node {node.name or '(unnamed)'!r} ({node.domain}."
                              f"{node.op_type}): ONNX Runtime's quantizer handles ai.onnx and "
                              "com.microsoft ops only")
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own kinds; its text names the node
        raise ConfigError(f"{path}: ONNX Runtime cannot load it: "
                          f"{' '.join(str(exc).split())[:400]}") from None
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ConfigError(f"{path}: {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                          "compress calibrates a one-input model from --data")
    if inputs[0].type != "tensor(float)":
        raise ConfigError(f"{path}: input {inputs[0].name!r} is {inputs[0].type}; calibration "
                          "from --data feeds tensor(float)")
    return ModelInput(inputs[0].name, list(inputs[0].shape))


def onnx_bytes(path: Path) -> int:
    """The file's size plus the external data files its tensors point at."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    locations = {entry.value for tensor in model.graph.initializer
                 if tensor.data_location == onnx.TensorProto.EXTERNAL
                 for entry in tensor.external_data if entry.key == "location"}
    return path.stat().st_size + sum((path.parent / name).stat().st_size
                                     for name in locations if (path.parent / name).is_file())


def _check_fits(path: Path, model_input: ModelInput, sample_shape: tuple[int, ...]) -> None:
    declared = model_input.shape[1:]
    fits = len(declared) == len(sample_shape) and all(
        not isinstance(d, int) or d <= 0 or d == s for d, s in zip(declared, sample_shape))
    if not fits:
        raise SetupError(f"{path}: input {model_input.name!r} is {_dims(model_input.shape)}, "
                         f"the data's samples are {_dims(['N', *sample_shape])}")


def _dims(shape: list[Any]) -> str:
    return "x".join(str(d) if d not in (None, "") else "?" for d in shape)


def _metric(spec: Optional[str]) -> Any:
    if not spec:
        return None
    from toolkit.quality import get_metric

    return get_metric(spec)


class _Reader:
    """Feeds calibration batches to `quantize_static` (ONNX Runtime's CalibrationDataReader)."""

    def __init__(self, name: str, samples: np.ndarray, batch: int) -> None:
        self._batches: Iterator[dict[str, np.ndarray]] = iter(
            {name: samples[i:i + batch]} for i in range(0, len(samples), batch))

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        return next(self._batches, None)


def _quantize(src: Path, dst: Path, params: Any, dataset: Any, model_input: ModelInput,
              tmp: Path) -> dict[str, Any]:
    """Runs one quantize step from `src` into `dst`; returns the step's figures."""
    from onnxruntime import quantization as q

    if params.scheme == "fp16":
        from toolkit.export.onnx_quant import to_fp16  # the converter the ONNX export uses

        to_fp16(src, dst)
        return {"scheme": "fp16", "tool": "onnxruntime.transformers.float16"}
    pre = tmp / "preprocessed.onnx"
    try:
        q.quant_pre_process(str(src), str(pre))
    except Exception:  # noqa: BLE001 - symbolic shape inference fails on some graphs
        q.quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    per_channel = params.granularity == "per-channel"
    figures: dict[str, Any] = {"scheme": params.scheme, "per_channel": per_channel,
                               "tool": "onnxruntime.quantization"}
    try:
        if params.scheme == "int8-dynamic":
            q.quantize_dynamic(str(pre), str(dst), weight_type=q.QuantType.QInt8,
                               per_channel=per_channel)
            return figures
        samples = dataset.calibration(params.calibration).detach().float().numpy()
        batch = model_input.fixed_batch or CALIBRATION_BATCH
        method = getattr(q.CalibrationMethod, OBSERVERS[params.observer])
        extra = {"CalibPercentile": params.percentile} if params.observer == "percentile" else {}
        q.quantize_static(
            str(pre), str(dst), _as_reader(model_input.name, samples, batch),
            quant_format=q.QuantFormat.QDQ, per_channel=per_channel,
            activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
            calibrate_method=method, extra_options=extra)
    except Exception as exc:  # noqa: BLE001 - the quantizer raises many kinds
        raise ExportError(f"{src}: ONNX Runtime's quantizer failed{_node_named(pre, exc)}: "
                          f"{' '.join(str(exc).split())[:300]}") from None
    figures.update(calibration_samples=len(samples), observer=params.observer)
    return figures


def _as_reader(name: str, samples: np.ndarray, batch: int) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(_Reader, CalibrationDataReader):
        pass

    return Reader(name, samples, batch)


def _node_named(path: Path, exc: Exception) -> str:
    """' at node NAME (OP)' when the quantizer's message names a node of the graph."""
    import onnx

    try:
        graph = onnx.load(str(path)).graph
    except Exception:  # noqa: BLE001 - the pre-processed file may not exist
        return ""
    text = str(exc)
    for node in graph.node:
        if node.name and node.name in text:
            return f" at node {node.name!r} ({node.op_type})"
    return ""


def _check(src: Path, dst: Path, dataset: Any, precision: str, scorer: Any) -> dict[str, Any]:
    """The output file against the input file on the host's ONNX Runtime, on the test split."""
    from toolkit import quality
    from toolkit.export.host_runtime import run_artifact

    x = dataset.test_x.detach().float().numpy()
    targets = dataset.test_y.detach().numpy()
    reference, outputs = run_artifact(src, x), run_artifact(dst, x)
    check: dict[str, Any] = {"samples": len(x), "precision": precision}
    if quality.is_classifier_output(reference):
        parity = quality.parity(outputs, reference, precision)
        check["parity"] = asdict(parity)
        check["top1_agreement_pct"] = parity.top1_agreement_pct
        parts = [parity.describe()]
        if dataset.has_labels:
            check["accuracy_before_pct"] = quality.accuracy_pct(reference, targets)
            check["accuracy_after_pct"] = quality.accuracy_pct(outputs, targets)
            parts.append(f"accuracy {check['accuracy_before_pct']:.2f}% → "
                         f"{check['accuracy_after_pct']:.2f}%")
    else:
        check["max_abs_diff"] = quality.max_abs_diff(outputs, reference)
        parts = [f"max abs diff {check['max_abs_diff']:.3g} over {len(x)} samples"]
    if scorer is not None:
        before, after = scorer.compute(reference, targets), scorer.compute(outputs, targets)
        check["metric"] = {**scorer.to_json(), "before": before, "after": after}
        parts.append(f"{scorer.name} {scorer.value_text(before)} → {scorer.value_text(after)}")
    check["summary"] = "; ".join(parts)
    return check

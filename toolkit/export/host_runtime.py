"""Runs an exported artifact on the host: LiteRT for `.tflite`, onnxruntime for `.onnx`,
ExecuTorch for `.pte`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from device_agent.measure.quantization import dequantize, quantize
from toolkit.errors import ExportError


def run_artifact(path: Path, inputs: np.ndarray) -> np.ndarray:
    """Returns the artifact's float outputs for float `inputs` (batch first).

    Quantized inputs/outputs (int8 TFLite) are quantized/dequantized with the tensor's own
    scale and zero point, so callers always pass and receive float32.

    Raises:
        ExportError: unknown suffix, or the runtime rejected the artifact.
    """
    path = Path(path)
    inputs = np.ascontiguousarray(inputs, dtype=np.float32)
    try:
        if path.suffix == ".tflite":
            return _run_tflite(path, inputs)
        if path.suffix == ".onnx":
            return _run_onnx(path, inputs)
        if path.suffix == ".pte":
            from toolkit.export.pte import run_pte

            return run_pte(path, inputs)
    except ExportError:
        raise
    except Exception as exc:  # the runtimes raise many kinds
        raise ExportError(f"{path}: the host runtime could not run it: {exc}") from exc
    raise ExportError(f"{path}: expected a .tflite or .onnx file (or an ExecuTorch .pte)")


def _run_tflite(path: Path, inputs: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    batch = int(inp["shape"][0]) or 1
    outputs = []
    for start in range(0, len(inputs), batch):
        chunk = inputs[start:start + batch]
        if len(chunk) < batch:  # pad the last chunk to the model's static batch
            pad = np.zeros((batch - len(chunk), *chunk.shape[1:]), np.float32)
            chunk = np.concatenate([chunk, pad])
        interpreter.set_tensor(inp["index"], _quantize(chunk, inp))
        interpreter.invoke()
        result = _dequantize(interpreter.get_tensor(out["index"]), out)
        outputs.append(result[: min(batch, len(inputs) - start)])
    return np.concatenate(outputs)


def _quantize(values: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    if dtype.kind == "f" or not scale:
        return values.astype(dtype)
    return quantize(values, scale, zero_point, dtype)


def _dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if np.dtype(detail["dtype"]).kind == "f" or not scale:
        return values.astype(np.float32)
    return dequantize(values, scale, zero_point)


def _run_onnx(path: Path, inputs: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    batch = inp.shape[0] if isinstance(inp.shape[0], int) else 256
    outputs = []
    for start in range(0, len(inputs), batch):
        outputs.append(session.run(None, {inp.name: inputs[start:start + batch]})[0])
    return np.concatenate(outputs).astype(np.float32)

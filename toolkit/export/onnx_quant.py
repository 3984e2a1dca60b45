"""ONNX fp16 conversion and int8 quantization (onnxruntime.quantization, QDQ format)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch

from toolkit.export.plan import QuantizationPlan, activation_range


def to_fp16(src: Path, dst: Path) -> None:
    """Converts weights and compute to fp16, keeping fp32 inputs and outputs."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))


def quantize_dynamic_int8(src: Path, dst: Path, plan: QuantizationPlan) -> None:
    """int8 weights, activations quantized at run time (MatMul/Gemm/Conv)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src),
        str(dst),
        weight_type=QuantType.QInt8,
        per_channel=plan.granularity == "per-channel",
    )


def quantize_static_int8(
    src: Path, dst: Path, plan: QuantizationPlan, calibration: torch.Tensor
) -> None:
    """QDQ int8 with activation ranges computed by the plan's observer over `calibration`."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import TensorsData, save_tensors_data

    ranges = _ranges(src, calibration.detach().float().numpy(), plan)
    float_nodes = _float_nodes(src, plan)
    with tempfile.TemporaryDirectory(prefix="edgeloop-calib-") as tmp:
        cache = Path(tmp) / "ranges.json"
        data = {name: (np.array(lo, np.float32), np.array(hi, np.float32))
                for name, (lo, hi) in ranges.items()}
        save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), cache)
        quantize_static(
            str(src),
            str(dst),
            calibration_data_reader=None,
            quant_format=QuantFormat.QDQ,
            per_channel=plan.granularity == "per-channel",
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=float_nodes,
            calibrate_method=CalibrationMethod.MinMax,
            calibration_cache_path=str(cache),
        )


def _ranges(src: Path, samples: np.ndarray, plan: QuantizationPlan) -> dict[str, tuple]:
    """Runs the float model on `samples` and returns each float tensor's (low, high)."""
    import onnxruntime as ort

    model = onnx.shape_inference.infer_shapes(onnx.load(str(src)))
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    infos = {vi.name: vi for vi in list(graph.value_info) + list(graph.output) + list(graph.input)}
    wanted = []
    for node in graph.node:
        for name in list(node.input) + list(node.output):
            vi = infos.get(name)
            if (vi is None or name in initializers or name in wanted
                    or vi.type.tensor_type.elem_type != onnx.TensorProto.FLOAT):
                continue
            wanted.append(name)
    outputs = {o.name for o in graph.output}
    graph.output.extend(infos[name] for name in wanted if name not in outputs)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    batch = 1 if isinstance(session.get_inputs()[0].shape[0], int) else 64
    collected: dict[str, list[np.ndarray]] = {name: [] for name in wanted}
    for start in range(0, len(samples), batch):
        values = session.run(wanted, {input_name: samples[start:start + batch]})
        for name, value in zip(wanted, values):
            collected[name].append(np.asarray(value).ravel())
    return {name: activation_range(np.concatenate(parts), plan.observer, plan.percentile, plan.k)
            for name, parts in collected.items() if parts}


def _float_nodes(src: Path, plan: QuantizationPlan) -> list[str]:
    """Names of ONNX nodes that come from layers the plan keeps in float."""
    keep = [name for name, precision in plan.layer_precision.items() if precision != "int8"]
    if not keep:
        return []
    nodes = []
    for node in onnx.load(str(src)).graph.node:
        if set(_node_scopes(node)) & set(keep):
            nodes.append(node.name)
    return nodes


def _node_scopes(node: onnx.NodeProto) -> list[str]:
    """The torch module paths a dynamo-exported node sits in (`features`, `features.1`, …)."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            # e.g. "['', 'features', 'features.1', '_native_batch_norm_legit_no_training']"
            return [p.strip(" '\"") for p in prop.value.strip("[]").split(",")]
    return []

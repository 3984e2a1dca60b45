"""What an exported model holds, op by op: `op_histogram` and `float_islands`.

A quantized model is fast only when the runtime can run it in one piece: on LiteRT, an op the
quantizer left in float sits between a DEQUANTIZE and a QUANTIZE, and XNNPACK's delegate is cut
into partitions around it (each a hand-off between delegate and interpreter). `float_islands`
names those ops and counts the partitions.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from toolkit.errors import ExportError

# ops that move data or convert it: never "computed in float" in the sense of an island
_CONVERSIONS = {
    "QUANTIZE",
    "DEQUANTIZE",
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
}
_LAYOUT = {
    "TRANSPOSE",
    "RESHAPE",
    "PAD",
    "SQUEEZE",
    "EXPAND_DIMS",
    "CONCATENATION",
    "Transpose",
    "Reshape",
    "Pad",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "Shape",
    "Gather",
    "Concat",
}


@dataclass
class FloatIslands:
    """Ops of a quantized model that compute in float.

    Attributes:
        ops: op name -> how many of that op compute in float (their inputs and outputs are
            float32 tensors), layout-only ops (reshape, transpose, pad…) excluded.
        count: sum of `ops`.
        quantize_ops: QUANTIZE / QuantizeLinear ops (one at the input of a fully int8 model
            with float input; none with int8 input).
        dequantize_ops: DEQUANTIZE / DequantizeLinear ops.
        partitions: delegate partitions LiteRT's default XNNPACK delegate makes on this host
            (1: the whole model runs delegated); None for ONNX or when this LiteRT cannot list
            them (`PartitionsUnknown`); a count that fails otherwise raises.
    """

    ops: dict[str, int] = field(default_factory=dict)
    count: int = 0
    quantize_ops: int = 0
    dequantize_ops: int = 0
    partitions: Union[int, None] = None

    @property
    def any(self) -> bool:
        """Whether some computing op stays float, or the delegate is split."""
        return self.count > 0 or (self.partitions or 0) > 1

    def describe(self) -> str:
        """One line: which ops stay float and how many, and the partitions."""
        names = ", ".join(f"{n} ×{c}" for n, c in sorted(self.ops.items(), key=lambda i: -i[1]))
        text = f"{self.count} op(s) kept in float ({names or 'none'})"
        text += f", {self.quantize_ops} QUANTIZE / {self.dequantize_ops} DEQUANTIZE"
        if self.partitions is not None:
            text += f", {self.partitions} delegate partition(s)"
        return text

    def to_json(self) -> dict:
        """Plain data for the model card."""
        return {
            "ops": dict(self.ops),
            "count": self.count,
            "quantize_ops": self.quantize_ops,
            "dequantize_ops": self.dequantize_ops,
            "partitions": self.partitions,
        }


def op_histogram(path: Union[str, Path]) -> dict[str, int]:
    """Op name -> count in a `.tflite` (builtin op names) or `.onnx` (op types) file."""
    path = Path(path)
    if path.suffix == ".onnx":
        return dict(Counter(node.op_type for node in _onnx_nodes(path)))
    return dict(Counter(op["op_name"] for op in _tflite_ops(path)[0]))


def float_islands(path: Union[str, Path]) -> FloatIslands:
    """The ops of a `.tflite` or `.onnx` file that compute in float, and the delegate split."""
    path = Path(path)
    if path.suffix == ".onnx":
        return _onnx_islands(path)
    ops, float_tensors = _tflite_ops(path)
    found = FloatIslands(partitions=_delegate_partitions(path))
    for op in ops:
        name = op["op_name"]
        if name == "QUANTIZE":
            found.quantize_ops += 1
        elif name == "DEQUANTIZE":
            found.dequantize_ops += 1
        elif name not in _LAYOUT and any(i in float_tensors for i in op["outputs"]):
            found.ops[name] = found.ops.get(name, 0) + 1
    found.count = sum(found.ops.values())
    return found


def _tflite_ops(path: Path) -> tuple[list[dict], set[int]]:
    """The ops (without any delegate) and the indices of float32 activation tensors."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    from ai_edge_litert import interpreter as litert

    interpreter = litert.Interpreter(
        model_path=str(path),
        experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    floats = {t["index"] for t in interpreter.get_tensor_details() if t["dtype"] == np.float32}
    return interpreter._get_ops_details(), floats


class PartitionsUnknown(ExportError):
    """This host's LiteRT cannot list the nodes its delegate adds (no `ai_edge_litert`, or an
    interpreter without `_get_ops_details`): the delegate partitions cannot be counted."""


def delegate_partitions(path: Union[str, Path]) -> int:
    """DELEGATE nodes LiteRT's default (XNNPACK) delegate adds once tensors are allocated.

    Raises:
        PartitionsUnknown: this LiteRT cannot list them (the count is unknown, not 0).
        Anything LiteRT raises loading or allocating `path` (a count that broke is not hidden).
    """
    try:
        from ai_edge_litert import interpreter as litert
    except ImportError as exc:
        raise PartitionsUnknown(f"{path}: no ai_edge_litert to count delegate partitions "
                                f"({exc})") from exc
    plain = litert.Interpreter(
        model_path=str(path),
        experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    if not hasattr(plain, "_get_ops_details"):
        raise PartitionsUnknown(f"{path}: this LiteRT ({litert.__name__}) has no "
                                "Interpreter._get_ops_details to list delegate partitions")
    base = len(plain._get_ops_details())
    delegated = litert.Interpreter(model_path=str(path), num_threads=1)
    delegated.allocate_tensors()
    extra = delegated._get_ops_details()[base:]
    return sum(1 for op in extra if op["op_name"] == "DELEGATE")


def _delegate_partitions(path: Path) -> Union[int, None]:
    """`delegate_partitions`, or None where this LiteRT cannot tell (an older runtime)."""
    try:
        return delegate_partitions(path)
    except PartitionsUnknown:
        return None


def _onnx_nodes(path: Path) -> list:
    import onnx

    return list(onnx.load(str(path), load_external_data=False).graph.node)


def _onnx_islands(path: Path) -> FloatIslands:
    """ONNX QDQ models: ops whose inputs come straight from a DequantizeLinear run in float
    unless a QuantizeLinear takes their output (onnxruntime then fuses them into int8)."""
    nodes = _onnx_nodes(path)
    producer = {out: node for node in nodes for out in node.output}
    consumers: dict[str, list] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found = FloatIslands()
    for node in nodes:
        if node.op_type in ("QuantizeLinear", "DynamicQuantizeLinear"):
            found.quantize_ops += 1
        elif node.op_type == "DequantizeLinear":
            found.dequantize_ops += 1
    quantized_anywhere = found.quantize_ops + found.dequantize_ops > 0
    for node in nodes:
        if node.op_type in _CONVERSIONS or node.op_type in _LAYOUT or not quantized_anywhere:
            continue
        if node.op_type.startswith("QLinear") or node.op_type in ("ConvInteger", "MatMulInteger"):
            continue
        fed = any(
            producer.get(i) is not None and producer[i].op_type == "DequantizeLinear"
            for i in node.input[:1]
        )
        requantized = all(
            c.op_type == "QuantizeLinear" for out in node.output for c in consumers.get(out, [])
        ) and any(consumers.get(out) for out in node.output)
        if not (fed and requantized):
            found.ops[node.op_type] = found.ops.get(node.op_type, 0) + 1
    found.count = sum(found.ops.values())
    return found

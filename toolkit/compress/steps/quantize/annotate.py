"""Whole-graph int8 annotation for static schemes: every op with an int8 TFLite kernel gets one.

litert-torch's PT2E quantizer annotates a short list of patterns (conv, conv+ReLU, linear, add,
mul, cat, pools); every other op (hardswish, hardsigmoid, ReLU6, sigmoid, reshapes after an
unannotated op) stays float, and the converter wraps it in DEQUANTIZE/QUANTIZE: a float island
that splits the XNNPACK delegate and makes int8 slower than fp32. And it fuses conv with ReLU
only: a ReLU6 (`hardtanh(0, 6)`) shares the range of the raw conv output.

This module annotates by op kind, walking the graph once in order:

- conv / linear / add / sub / mul: own input and output ranges; when the op's only user is a
  clamp TFLite fuses (ReLU, ReLU6, ReLU-1..1), the output range is observed after the clamp;
- hardswish, gelu, leaky ReLU, elu: own output range;
- sigmoid, softmax, tanh: the fixed output ranges TFLite's int8 kernels require;
- pools, mean, reshapes, permutes, pads, slices, standalone clamps: output shares the input range
  (TFLite's int8 AVERAGE_POOL_2D and MAX_POOL_2D require it; reshapes are free with it);
- cat: every input and the output share one range.

`hardsigmoid(x)` is rewritten first as `hardtanh(x + 3, 0, 6) · 1/6` (an int8 ADD with a fused
ReLU6 and an int8 MUL), `hardswish(x)` as `x · hardsigmoid(x)` (LiteRT's XNNPACK delegate has
no int8 HARD_SWISH, so each one would split the delegated graph), and division by a constant
as multiplication.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import torch
from torch.fx import GraphModule, Node
from torchao.quantization.pt2e.quantizer import (
    FixedQParamsQuantizationSpec,
    QuantizationAnnotation,
    SharedQuantizationSpec,
)

aten = torch.ops.aten

WEIGHTED = {aten.conv1d.default, aten.conv2d.default, aten.convolution.default, aten.linear.default}
BINARY = {aten.add.Tensor, aten.add_.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.mul_.Tensor}
OWN_RANGE = {
    aten.hardswish.default,
    aten.hardswish_.default,
    aten.gelu.default,
    aten.leaky_relu.default,
    aten.elu.default,
}
CLAMPS = {
    aten.relu.default,
    aten.relu_.default,
    aten.hardtanh.default,
    aten.hardtanh_.default,
    aten.clamp.default,
}
SHARED = CLAMPS | {
    aten.max_pool2d.default,
    aten.max_pool1d.default,
    aten.avg_pool2d.default,
    aten.avg_pool1d.default,
    aten.adaptive_avg_pool2d.default,
    aten.adaptive_avg_pool1d.default,
    aten.mean.dim,
    aten.mean.default,
    aten.view.default,
    aten.reshape.default,
    aten._unsafe_view.default,
    aten.flatten.using_ints,
    aten.permute.default,
    aten.transpose.int,
    aten.squeeze.dim,
    aten.squeeze.dims,
    aten.squeeze.default,
    aten.unsqueeze.default,
    aten.pad.default,
    aten.constant_pad_nd.default,
    aten.slice.Tensor,
    aten.select.int,
    aten.contiguous.default,
    aten.clone.default,
    aten.dropout.default,
    aten.expand.default,
    aten.t.default,
}
FIXED = {  # op -> (scale, zero point) of TFLite's int8 kernel output
    aten.sigmoid.default: (1 / 256, -128),
    aten._softmax.default: (1 / 256, -128),
    aten.softmax.int: (1 / 256, -128),
    aten.tanh.default: (1 / 128, 0),
}
CAT = {aten.cat.default, aten.concat.default}
_ANNOTATION = "quantization_annotation"


def decompose_for_int8(model: GraphModule) -> GraphModule:
    """Rewrites ops without an int8 TFLite kernel into ones that have one, in place.

    `hardsigmoid(x)` → `hardtanh(x + 3, 0, 6) * (1/6)`; `hardswish(x)` → `x * hardsigmoid(x)`
    so decomposed; `x / c` (constant c) → `x * (1/c)`. LiteRT's XNNPACK delegate has no int8
    HARD_SWISH: one such op splits the delegated graph in two, while int8 ADD (with a fused
    ReLU6) and MUL are delegated.
    """
    graph = model.graph
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        if node.target in (
            aten.hardsigmoid.default,
            aten.hardsigmoid_.default,
            aten.hardswish.default,
            aten.hardswish_.default,
        ):
            x = node.args[0]
            with graph.inserting_before(node):
                three, sixth = _constant(model, node, 3.0), _constant(model, node, 1.0 / 6.0)
                shifted = graph.call_function(aten.add.Tensor, (x, three))
                clamped = graph.call_function(aten.hardtanh.default, (shifted, 0.0, 6.0))
                gate = graph.call_function(aten.mul.Tensor, (clamped, sixth))
                new = [shifted, clamped, gate]
                if node.target in (aten.hardswish.default, aten.hardswish_.default):
                    new.append(graph.call_function(aten.mul.Tensor, (x, gate)))
            for added in new:  # elementwise: same shape and dtype as the op replaced
                added.meta.update(node.meta)
            _replace(node, new[-1])
        elif node.target == aten.div.Tensor and isinstance(node.args[1], (int, float)):
            with graph.inserting_before(node):
                inverse = _constant(model, node, 1.0 / node.args[1])
                scaled = graph.call_function(aten.mul.Tensor, (node.args[0], inverse))
            scaled.meta.update(node.meta)
            _replace(node, scaled)
    graph.lint()
    model.recompile()
    return model


def _constant(model: GraphModule, like: Node, value: float) -> Node:
    """A constant of `like`'s rank (all dimensions 1), so the converter keeps the op that
    uses it in NHWC with its other operand (a 0-d constant makes it insert transposes)."""
    val = like.meta.get("val")
    rank = val.dim() if hasattr(val, "dim") else 0
    name = f"_int8_constant_{len(list(model.named_buffers()))}"
    model.register_buffer(name, torch.full([1] * rank, float(value)))
    node = model.graph.get_attr(name)
    node.meta["val"] = getattr(model, name)
    return node


def _replace(old: Node, new: Node) -> None:
    old.replace_all_uses_with(new)
    old.graph.erase_node(old)


def annotate_int8(
    model: GraphModule, config: Any, keep: Optional[Callable[[Node], bool]] = None
) -> GraphModule:
    """Annotates every int8-capable op of `model` with `config`'s specs (see module doc).

    Args:
        model: the exported graph, batch norms already folded into their convs.
        config: a litert-torch `QuantizationConfig` with input/output activation specs.
        keep: returns False for nodes that must stay float (layers a mixed plan keeps).
    """
    act = config.input_activation
    weight = config.weight
    for node in model.graph.nodes:
        if node.op != "call_function" or _annotated(node) or (keep and not keep(node)):
            continue
        if keep and any(
            isinstance(a, Node) and a.op == "call_function" and not keep(a)
            for a in node.all_input_nodes
        ):
            continue  # fed by a layer kept float: quantizing here would make that layer int8
        target = node.target
        if target in WEIGHTED:
            inputs = {node.args[0]: act, node.args[1]: weight}
            if len(node.args) > 2 and isinstance(node.args[2], Node):
                inputs[node.args[2]] = config.bias
            _annotate_fused(node, inputs, act, keep)
        elif target in BINARY:
            inputs = {a: act for a in node.args[:2] if isinstance(a, Node)}
            _annotate_fused(node, inputs, act, keep)
        elif target in OWN_RANGE:
            _set(node, {node.args[0]: act}, act)
        elif target in FIXED:
            scale, zero_point = FIXED[target]
            fixed = FixedQParamsQuantizationSpec(
                dtype=torch.int8,
                scale=scale,
                zero_point=zero_point,
                quant_min=-128,
                quant_max=127,
                qscheme=torch.per_tensor_affine,
            )
            _set(node, {node.args[0]: act}, fixed)
        elif target in SHARED and isinstance(node.args[0], Node):
            source = node.args[0]
            _set(node, {source: _input_spec(source, act)}, SharedQuantizationSpec((source, node)))
        elif target in CAT:
            inputs = [a for a in node.args[0] if isinstance(a, Node)]
            if inputs:
                shared = SharedQuantizationSpec((inputs[0], node))
                spec = {inputs[0]: act, **{a: shared for a in inputs[1:]}}
                _set(node, spec, shared)
    return model


def _annotate_fused(
    node: Node, inputs: dict, act: Any, keep: Optional[Callable[[Node], bool]]
) -> None:
    """Annotates `node`; its output range is observed after a clamp TFLite fuses into it."""
    users = list(node.users)
    clamp = users[0] if len(users) == 1 and _fusable_clamp(users[0]) else None
    if clamp is not None and not _annotated(clamp) and (keep is None or keep(clamp)):
        _set(node, inputs, None)
        _set(clamp, {}, act)
    else:
        _set(node, inputs, act)


def _fusable_clamp(node: Node) -> bool:
    """ReLU, ReLU6 and ReLU-1..1: the clamps TFLite folds into the producing op."""
    if node.op != "call_function" or node.target not in CLAMPS:
        return False
    if node.target in (aten.relu.default, aten.relu_.default):
        return True
    default = (-1.0, 1.0) if node.target != aten.clamp.default else (None, None)
    low = node.args[1] if len(node.args) > 1 else node.kwargs.get("min_val", default[0])
    high = node.args[2] if len(node.args) > 2 else node.kwargs.get("max_val", default[1])
    return (low, high) in ((0, 6), (-1, 1))


def _input_spec(source: Node, act: Any) -> Any:
    """The producer's range when it has one (shared), else a range of its own."""
    annotation = source.meta.get(_ANNOTATION)
    if annotation is not None and annotation.output_qspec is not None:
        return SharedQuantizationSpec(source)
    return act


def _set(node: Node, inputs: dict, output: Any) -> None:
    node.meta[_ANNOTATION] = QuantizationAnnotation(
        input_qspec_map=dict(inputs), output_qspec=output, _annotated=True
    )


def _annotated(node: Node) -> bool:
    annotation = node.meta.get(_ANNOTATION)
    return annotation is not None and annotation._annotated

"""The torch side of quantization: export, PT2E prepare, calibrate or train, convert."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Optional

import torch
from torch import nn
from torchao.quantization.pt2e import allow_exported_model_train_eval
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e, prepare_qat_pt2e

from toolkit.export.plan import NotPortableError


class SampleLoop(nn.Module):
    """Runs a static-batch graph one sample at a time so it accepts any batch size."""

    def __init__(self, graph: nn.Module) -> None:
        super().__init__()
        self.graph = graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.graph(x[i : i + 1]) for i in range(x.shape[0])])


def export_program(model: nn.Module, input_shape: tuple[int, ...]) -> Any:
    """torch.export of `model`: with a dynamic batch dimension when the model allows it,
    else with `input_shape` exactly."""
    try:
        model.eval()
    except (NotImplementedError, RuntimeError):
        pass  # an exported graph keeps the mode it was exported in
    sample = torch.zeros((2, *input_shape[1:]))
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    try:
        return torch.export.export(model, (sample,), dynamic_shapes=({0: batch},))
    except Exception:  # the model specialises its batch size: export it static
        return torch.export.export(model, (torch.zeros(input_shape),))


def export_graph(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[Any, bool]:
    """Exports `model` for PT2E; returns (graph module, whether its batch size is dynamic).

    A dynamic batch dimension is tried first (fast calibration and training); a model that
    fixes its batch size is exported with `input_shape` as given.
    """
    program = export_program(model, input_shape)
    return program.module(), batch_is_dynamic(program)


def batch_is_dynamic(program: Any) -> bool:
    """Whether the first user input of an ExportedProgram has a symbolic batch dimension."""
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in program.graph_signature.user_inputs:
            value = node.meta.get("val")
            return value is not None and not isinstance(value.shape[0], int)
    return False


def run_batches(graph: Callable, inputs: torch.Tensor, dynamic: bool, size: int = 64) -> None:
    """Feeds `inputs` through `graph` (observers record ranges), batched when allowed."""
    step = size if dynamic else 1
    with torch.no_grad():
        for start in range(0, len(inputs), step):
            graph(inputs[start : start + step])


def quantize_ptq(
    model: nn.Module, quantizer: Any, input_shape: tuple[int, ...], calibration: torch.Tensor
) -> tuple[Any, Any]:
    """Post-training quantization; returns (converted graph for export, model for torch use).

    Dropout is removed before annotation: post-training quantization computes the inference
    graph, where dropout is the identity (and an unannotated dropout would split the int8 graph).
    """
    graph, dynamic = export_graph(model, input_shape)
    strip_dropout(graph)
    prepared = prepare_pt2e(graph, quantizer)
    run_batches(prepared, calibration, dynamic)
    converted = _eval_mode(convert_pt2e(prepared, fold_quantize=False))
    return converted, (converted if dynamic else SampleLoop(converted))


def quantize_qat(
    model: nn.Module,
    quantizer: Any,
    input_shape: tuple[int, ...],
    train: Callable[[nn.Module], None],
) -> tuple[Any, Any, nn.Module]:
    """Quantization-aware training.

    Args:
        train: trains the fake-quantized graph in place (e.g. `train_epochs` over the data).

    Returns:
        (converted graph for export, model for torch use, float copy of `model` carrying the
        trained weights, for exporters that quantize a float model themselves).
    """
    model = fold_batchnorm(model, input_shape)
    graph, dynamic = export_graph(model, input_shape)
    if not dynamic:
        raise ValueError("qat needs a model whose batch size is not fixed")
    prepared = prepare_qat_pt2e(graph, quantizer)
    allow_exported_model_train_eval(prepared)
    train(prepared)
    prepared.eval()
    trained = copy.deepcopy(model)
    own = trained.state_dict()
    learned = {
        k: v for k, v in prepared.state_dict().items() if k in own and v.shape == own[k].shape
    }
    trained.load_state_dict(learned, strict=False)
    converted = _eval_mode(convert_pt2e(prepared, fold_quantize=False))
    return converted, converted, trained.eval()


def _eval_mode(graph: Any) -> Any:
    """Puts a converted graph in eval mode for good: dropout removed, `training` False.

    torchao's `eval()` of an exported graph rewrites dropout/batch-norm patterns but leaves
    `graph.training` True, so a later "restore the mode" (`accuracy()` does one) called
    `train(True)`, which rewrote every dropout into its training pattern (`rand_like`, which
    TFLite cannot lower: int8 export failed on every model with Dropout). A converted graph is
    for inference only; its dropout is removed and its `training` flags are cleared.
    """
    allow_exported_model_train_eval(graph)
    graph.eval()  # torchao: batch norm patterns to eval
    strip_dropout(graph)
    nn.Module.train(graph, False)  # the flags torchao's eval() leaves set
    return graph


_DROPOUT = {
    torch.ops.aten.dropout.default,
    torch.ops.aten.dropout_.default,
    torch.ops.aten.feature_dropout.default,
    torch.ops.aten.feature_dropout_.default,
    torch.ops.aten.alpha_dropout.default,
    torch.ops.aten.alpha_dropout_.default,
    torch.ops.aten.feature_alpha_dropout.default,
    torch.ops.aten.feature_alpha_dropout_.default,
}


def strip_dropout(graph: torch.fx.GraphModule) -> int:
    """Removes the dropout nodes of an exported graph (the identity at inference), in place.

    Returns:
        How many were removed.
    """
    removed = 0
    for node in list(graph.graph.nodes):
        if node.op == "call_function" and node.target in _DROPOUT:
            node.replace_all_uses_with(node.args[0])
            graph.graph.erase_node(node)
            removed += 1
    if removed:
        graph.graph.lint()
        graph.recompile()
    return removed


def fold_batchnorm(model: nn.Module, input_shape: tuple[int, ...]) -> nn.Module:
    """Folds each batch norm that directly follows a conv into that conv, in place.

    The batch norm becomes `nn.Identity`; the model computes the same in eval mode.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    modules = dict(model.named_modules())
    for conv_name, bn_name in batchnorm_followers(model, input_shape).items():
        conv, bn = modules.get(conv_name), modules.get(bn_name)
        is_conv = isinstance(conv, nn.modules.conv._ConvNd)
        if is_conv and isinstance(bn, nn.modules.batchnorm._BatchNorm):
            _replace(model, conv_name, fuse_conv_bn_eval(conv.eval(), bn.eval()))
            _replace(model, bn_name, nn.Identity())
    return model


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def round_to_fp16(model: nn.Module, layers: Optional[set[str]] = None) -> nn.Module:
    """Rounds weights (all, or those of `layers`) to fp16 values, in place; compute stays fp32.

    This is what an fp16-weight artifact computes: its weights are stored as fp16 and widened.
    """
    with torch.no_grad():
        for name, module in model.named_modules():
            if layers is not None and name not in layers:
                continue
            for param in module.parameters(recurse=False):
                param.copy_(param.half().float())
    return model


def batchnorm_followers(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, str]:
    """Maps each conv layer name to the batch-norm layer that directly consumes its output."""
    try:
        graph = torch.export.export(model.eval(), (torch.zeros(input_shape),)).graph
    except Exception:  # no graph, no followers: callers then keep only the named layers
        return {}

    def owner(node: torch.fx.Node) -> str:
        stack = node.meta.get("nn_module_stack") or {}
        return list(stack.values())[-1][0] if stack else ""

    followers = {}
    for node in graph.nodes:
        if node.op == "call_function" and "batch_norm" in str(node.target):
            source = node.args[0]
            if isinstance(source, torch.fx.Node) and "conv" in str(source.target):
                followers[owner(source)] = owner(node)
    return followers


# --- a converted graph as plain torch (what model.pt2 holds for int8 schemes) ---------------


def _quantize(x, scale, zero_point, quant_min, quant_max, dtype, *_, axis=None):
    if axis is not None:
        shape = [1] * x.dim()
        shape[axis] = -1
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    return torch.clamp(torch.round(x * (1.0 / scale)) + zero_point, quant_min, quant_max).to(dtype)


def _dequantize(x, scale, zero_point, *_, axis=None, **__):
    if axis is not None:
        shape = [1] * x.dim()
        shape[axis] = -1
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    return (x.to(torch.float32) - zero_point) * scale


def quantize_per_tensor(x, scale, zero_point, quant_min, quant_max, dtype, **_):
    """`quantized_decomposed.quantize_per_tensor` in plain torch ops."""
    return _quantize(x, scale, zero_point, quant_min, quant_max, dtype)


def dequantize_per_tensor(x, scale, zero_point, *_, **__):
    """`quantized_decomposed.dequantize_per_tensor` in plain torch ops (float32 out)."""
    return _dequantize(x, scale, zero_point)


def quantize_per_channel(x, scales, zero_points, axis, quant_min, quant_max, dtype, **_):
    """`quantized_decomposed.quantize_per_channel` in plain torch ops."""
    return _quantize(x, scales, zero_points, quant_min, quant_max, dtype, axis=axis)


def dequantize_per_channel(x, scales, zero_points, axis, *_, **__):
    """`quantized_decomposed.dequantize_per_channel` in plain torch ops (float32 out)."""
    return _dequantize(x, scales, zero_points, axis=axis)


_PLAIN = {
    "quantize_per_tensor": quantize_per_tensor,
    "dequantize_per_tensor": dequantize_per_tensor,
    "quantize_per_channel": quantize_per_channel,
    "dequantize_per_channel": dequantize_per_channel,
}


def as_plain_torch(model: nn.Module) -> nn.Module:
    """A copy of a PT2E-converted model whose quantize/dequantize ops are plain torch ops.

    torch.export archives of the converted graph name `quantized_decomposed.*` operators that
    only torchao registers, so `torch.export.load` fails without it (a device's torch runtime
    has no torchao). The copy computes the same (int8 weights, int8-rounded activations, fp32
    arithmetic); weights are quantized once here and kept as int8 buffers.

    Raises:
        NotPortableError: an op of the `quantized_decomposed` family that has no plain form
            here (e.g. the run-time `choose_qparams` of dynamic schemes), named.
    """
    model = copy.deepcopy(model)
    for graph_module in [m for m in model.modules() if isinstance(m, torch.fx.GraphModule)]:
        _rewrite(graph_module)
    return model


def _rewrite(gm: torch.fx.GraphModule) -> None:
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or "quantized_decomposed" not in str(node.target):
            continue
        name = str(node.target).split(".")[1]
        if name not in _PLAIN:
            raise NotPortableError(f"{node.target} has no plain-torch form")
        node.target = _PLAIN[name]
        inputs = [a for a in node.args if isinstance(a, torch.fx.Node)]
        if name.startswith("quantize") and all(a.op == "get_attr" for a in inputs):
            _fold(gm, node)  # a weight: quantize it once, keep the int8 tensor
    gm.graph.eliminate_dead_code()
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for name in [n for n, _ in gm.named_parameters(recurse=False)] + [
        n for n, _ in gm.named_buffers(recurse=False)
    ]:
        if name not in used:  # the float weights now held as int8 buffers
            delattr(gm, name)
    gm.graph.lint()
    gm.recompile()


def _fold(gm: torch.fx.GraphModule, node: torch.fx.Node) -> None:
    def value(arg: Any) -> Any:
        if isinstance(arg, torch.fx.Node):
            return _attr(gm, arg.target)
        return arg

    folded = node.target(
        *[value(a) for a in node.args], **{k: value(v) for k, v in node.kwargs.items()}
    )
    name = f"{node.name}_int8"
    gm.register_buffer(name, folded.detach().clone())
    with gm.graph.inserting_before(node):
        constant = gm.graph.get_attr(name)
    node.replace_all_uses_with(constant)
    gm.graph.erase_node(node)


def _attr(module: nn.Module, target: str) -> Any:
    for part in target.split("."):
        module = getattr(module, part)
    return module

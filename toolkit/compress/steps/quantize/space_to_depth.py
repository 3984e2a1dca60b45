"""Strided convs on one input channel rewritten as space-to-depth + a stride-1 conv, for int8.

A conv with one input channel (a spectrogram or greyscale stem, e.g. the DS-CNN's 10×4 stride-2
conv on a 49×10 MFCC map) lowers to a TFLite DEPTHWISE_CONV_2D with a depth multiplier (here
64). XNNPACK runs it as a GEMM over kernel taps of one channel each: its fp32 kernels take one
channel per tap, its int8 kernels pad each tap's channels to a block of 8 (on AVX2/AVX-512),
so the int8 stem does 8× the multiply-adds of the fp32 one and is ~1.5× *slower* than fp32
(DS-CNN stem alone on LiteRT/XNNPACK, 1 thread: fp32 9.0 µs, int8 13.4 µs; rewritten, int8
6.4 µs).

The rewrite is exact: with strides (sh, sw) the padded input P is cut into sh×sw blocks, each
block's pixels become channels (S[(a, b), i, j] = P[i·sh + a, j·sw + b]), and the kernel, padded
with zero taps to a multiple of the strides, is cut the same way (W'[o, (a, b), i, j] =
W[o, 0, i·sh + a, j·sw + b]); a stride-1 conv of W' over S computes every output of the original.
The int8 conv then sees sh·sw channels per tap (4 for stride 2) and lowers to CONV_2D.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch.fx import GraphModule, Node

aten = torch.ops.aten


def space_to_depth_convs(model: GraphModule) -> int:
    """Rewrites each strided conv2d on one input channel (see module doc), in place.

    Args:
        model: an exported graph whose conv weights (and biases) are `get_attr` constants,
            batch norms already folded.

    Returns:
        How many convs were rewritten.
    """
    rewritten = 0
    for node in list(model.graph.nodes):
        plan = _plan(model, node)
        if plan is not None:
            _rewrite(model, node, *plan)
            rewritten += 1
    if rewritten:
        model.graph.lint()
        model.recompile()
    return rewritten


def _plan(model: GraphModule, node: Node) -> Optional[tuple]:
    """(weight, strides, padding) of a conv2d the rewrite applies to, else None."""
    if node.op != "call_function" or node.target != aten.conv2d.default:
        return None
    args = list(node.args) + [None] * (7 - len(node.args))
    x, weight_node = args[0], args[1]
    stride = _pair(args[3] if args[3] is not None else 1)
    padding = _pair(args[4] if args[4] is not None else 0)
    dilation = _pair(args[5] if args[5] is not None else 1)
    groups = args[6] if args[6] is not None else 1
    if not (isinstance(weight_node, Node) and weight_node.op == "get_attr"):
        return None
    if isinstance(padding, str) or groups != 1 or dilation != (1, 1) or stride == (1, 1):
        return None
    weight = _attr(model, weight_node.target)
    value = x.meta.get("val") if isinstance(x, Node) else None
    if weight.dim() != 4 or weight.shape[1] != 1 or value is None or value.dim() != 4:
        return None
    if not all(isinstance(d, int) for d in value.shape[2:]):
        return None
    geometry = _geometry(tuple(value.shape[2:]), tuple(weight.shape[2:]), stride, padding)
    if geometry["bottom"] < 0 or geometry["right"] < 0:
        return None  # the cut would crop the input: TFLite's PAD takes no negative padding
    return weight, stride, padding, geometry


def _geometry(size: tuple, kernel: tuple, stride: tuple, padding: tuple) -> dict[str, int]:
    """Blocks the stride-1 conv reads (rows, cols), kernel taps after the cut, and the bottom
    and right padding that makes the padded input exactly rows·sh × cols·sw."""
    (height, width), (kh, kw), (sh, sw), (ph, pw) = size, kernel, stride, padding
    out_h, out_w = (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
    taps_h, taps_w = -(-kh // sh), -(-kw // sw)  # rounded up: the kernel gets zero taps
    rows, cols = out_h - 1 + taps_h, out_w - 1 + taps_w
    return {
        "taps_h": taps_h,
        "taps_w": taps_w,
        "rows": rows,
        "cols": cols,
        "bottom": rows * sh - height - ph,
        "right": cols * sw - width - pw,
    }


def _rewrite(
    model: GraphModule,
    conv: Node,
    weight: torch.Tensor,
    stride: tuple,
    padding: tuple,
    geometry: dict[str, int],
) -> None:
    (sh, sw), (ph, pw), (kh, kw) = stride, padding, weight.shape[2:]
    taps_h, taps_w, rows, cols = (geometry[k] for k in ("taps_h", "taps_w", "rows", "cols"))
    bottom, right = geometry["bottom"], geometry["right"]
    cut = weight.detach().clone()
    cut = F.pad(cut, (0, taps_w * sw - kw, 0, taps_h * sh - kh))  # zero taps
    cut = cut.reshape(weight.shape[0], taps_h, sh, taps_w, sw).permute(0, 2, 4, 1, 3)
    cut = cut.reshape(weight.shape[0], sh * sw, taps_h, taps_w).contiguous()
    name = _free_name(model, "_space_to_depth_weight")
    model.register_buffer(name, cut)
    graph = conv.graph
    x = conv.args[0]
    with graph.inserting_before(conv):
        new_weight = graph.get_attr(name)
        padded = graph.call_function(
            aten.constant_pad_nd.default, (x, [pw, right, ph, bottom], 0.0)
        )
        blocks = graph.call_function(aten.view.default, (padded, [-1, rows, sh, cols, sw]))
        # blocks as the channels of an NHWC map, then NCHW for the conv: the converter's own
        # NCHW→NHWC transpose cancels the last permute, one TRANSPOSE remains
        moved = graph.call_function(aten.permute.default, (blocks, [0, 1, 3, 2, 4]))
        channels = graph.call_function(
            aten.clone.default, (moved,), {"memory_format": torch.contiguous_format}
        )
        nhwc = graph.call_function(aten.view.default, (channels, [-1, rows, cols, sh * sw]))
        s2d = graph.call_function(aten.permute.default, (nhwc, [0, 3, 1, 2]))
        new_conv = graph.call_function(
            aten.conv2d.default,
            (
                s2d,
                new_weight,
                conv.args[2] if len(conv.args) > 2 else None,
                [1, 1],
                [0, 0],
                [1, 1],
                1,
            ),
        )
    new_weight.meta["val"] = cut
    for node in (padded, blocks, moved, channels, nhwc, s2d, new_conv):
        _carry_meta(conv, node)
    conv.replace_all_uses_with(new_conv)
    graph.erase_node(conv)


def _carry_meta(source: Node, node: Node) -> None:
    """The conv's module stack and source (layer filters read them) and the node's own value."""
    for key in ("nn_module_stack", "source_fn_stack", "stack_trace", "from_node"):
        if key in source.meta:
            node.meta[key] = source.meta[key]
    args = [a.meta["val"] if isinstance(a, Node) else a for a in node.args]
    kwargs = {k: (v.meta["val"] if isinstance(v, Node) else v) for k, v in node.kwargs.items()}
    fake = next((a for a in args if hasattr(a, "fake_mode")), None)
    if fake is None:
        return
    with fake.fake_mode:
        node.meta["val"] = node.target(*[_fake(fake.fake_mode, a) for a in args], **kwargs)


def _fake(mode: Any, value: Any) -> Any:
    if isinstance(value, torch.Tensor) and not hasattr(value, "fake_mode"):
        return mode.from_tensor(value)
    return value


def _pair(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(value) if len(value) == 2 else (value[0], value[0])
    return (value, value)


def _free_name(model: GraphModule, stem: str) -> str:
    index = 0
    while hasattr(model, f"{stem}_{index}"):
        index += 1
    return f"{stem}_{index}"


def _attr(module: Any, target: str) -> Any:
    for part in target.split("."):
        module = getattr(module, part)
    return module

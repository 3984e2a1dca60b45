"""Model figures for the card: parameters, MACs, weight bytes as stored, Huffman-coded size."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from toolkit.export.plan import QuantizationPlan
from toolkit.hash_index import file_sha256 as file_sha256  # its one owner; re-exported


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """Returns (total, nonzero) parameter counts (pruning masks applied where present)."""
    total = nonzero = 0
    for name, tensor in model.state_dict().items():
        if not tensor.is_floating_point() or "running_" in name or name.endswith("_mask"):
            continue
        if name.endswith("_orig"):  # torch.nn.utils.prune keeps weight_orig and weight_mask
            mask = model.state_dict().get(name[: -len("_orig")] + "_mask")
            tensor = tensor * mask if mask is not None else tensor
        total += tensor.numel()
        nonzero += int(torch.count_nonzero(tensor))
    return total, nonzero


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass of one sample, over Conv and Linear layers.

    Counted with forward hooks: a conv costs (output elements) × (in channels / groups) ×
    kernel area; a linear layer (output elements) × in features. Dense: zeros count.
    """
    total = 0

    def conv_hook(module: nn.modules.conv._ConvNd, _: tuple, out: torch.Tensor) -> None:
        nonlocal total
        per_output = module.in_channels // module.groups * int(np.prod(module.kernel_size))
        total += out[0].numel() * per_output

    def linear_hook(module: nn.Linear, _: tuple, out: torch.Tensor) -> None:
        nonlocal total
        total += out[0].numel() * module.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    try:
        with torch.no_grad():
            model.eval()
            model(torch.zeros((1, *input_shape[1:])))
    finally:
        for handle in handles:
            handle.remove()
    return total


def stored_weight_arrays(
    model: nn.Module, plan: Optional[QuantizationPlan]
) -> dict[str, np.ndarray]:
    """Every weight tensor in the dtype the artifacts store it in.

    Without a plan, all float tensors are fp32. With a plan, the weights are read from its
    float model (so the quantized graph or the float model may be passed alike): with an int8
    plan, Conv/Linear weights are the symmetric int8 values (per-tensor or per-channel, as
    planned) and the rest stays fp32; with `fp16`, every float tensor is fp16. Batch-norm
    running statistics count as weights.
    """
    from toolkit.compress.steps.huffman import weight_arrays

    if plan is not None and plan.float_model is not None:
        model = plan.float_model  # a quantized graph has no layers to read weights from
    arrays = weight_arrays(model)
    if plan is None:
        return arrays
    if plan.scheme == "fp16":
        return {name: a.astype(np.float16) for name, a in arrays.items()}
    from toolkit.compress.steps.quantize.qconfig import int8_weights

    per_channel = plan.granularity == "per-channel"
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            if plan.layer_precision.get(name, "int8") == "int8":
                arrays[f"{name}.weight" if name else "weight"] = int8_weights(module.weight,
                                                                              per_channel)
    return arrays


def huffman_bytes(arrays: dict[str, np.ndarray]) -> int:
    """Huffman-coded bytes of the arrays (codebooks included), coded one tensor at a time."""
    from toolkit.compress.steps.huffman import encode

    return sum(encode(array).coded_bytes for array in arrays.values())


def file_huffman_bytes(path: Path) -> int:
    """Huffman-coded size of a file's bytes (symbols: bytes; codebook included)."""
    from toolkit.compress.steps.huffman import encode

    return encode(np.frombuffer(Path(path).read_bytes(), np.uint8)).coded_bytes


def state_sha256(model: nn.Module) -> str:
    """sha256 over the model's state_dict (names, dtypes, shapes and bytes, in order)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        if not isinstance(tensor, torch.Tensor):
            continue
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()

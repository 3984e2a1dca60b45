"""`huffman`: entropy-coded storage size of the weights (Deep Compression's last stage).

Each tensor is coded on its own, with its raw bit patterns as symbols (float32 → 32-bit
patterns, int8 → bytes), so decoding gives back the exact bits. On clustered or quantized
weights the alphabet is small and the code short; on plain float weights it is near 32 bits.
Coded size = packed bitstream + codebook (each symbol's raw bytes + one length byte) + an
8-byte header (symbol count, bit count). A tensor whose code would be larger than its raw
bytes (plain float weights, where nearly every value is its own symbol) is kept raw instead
("stored", as DEFLATE does), costing its raw bytes plus the header. The tensor shape is not
counted: the architecture stores it already.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from toolkit.compress.base import CompressionStep, StepContext, StepReport, register_step
from toolkit.compress.params import check_known

HEADER_BYTES = 8
_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_BLOCK_BITS = 1 << 20


@dataclass(frozen=True)
class HuffmanCoded:
    """One tensor, Huffman coded.

    Attributes:
        dtype: the original numpy dtype string, e.g. `<f4`.
        shape: the original shape.
        symbols: distinct raw bit patterns (unsigned ints of the item size), canonical order.
        lengths: code length in bits of each symbol, same order.
        bits: the packed bitstream, most significant bit first.
        n_bits: number of meaningful bits in `bits`.
        stored: True when `bits` holds the raw bytes because coding would not make them smaller.
    """

    dtype: str
    shape: tuple[int, ...]
    symbols: np.ndarray
    lengths: np.ndarray
    bits: bytes
    n_bits: int
    stored: bool = False

    @property
    def codebook_bytes(self) -> int:
        """Bytes to store the codebook: each symbol's raw bytes plus a 1-byte code length."""
        if self.stored:
            return HEADER_BYTES
        return len(self.symbols) * (np.dtype(self.dtype).itemsize + 1) + HEADER_BYTES

    @property
    def coded_bytes(self) -> int:
        """Total stored bytes: bitstream (rounded up to whole bytes) plus codebook."""
        return (self.n_bits + 7) // 8 + self.codebook_bytes


def encode(array: np.ndarray) -> HuffmanCoded:
    """Huffman-codes an array's raw element bit patterns (any 1/2/4/8-byte dtype)."""
    array = np.ascontiguousarray(array)
    raw = array.reshape(-1).view(_UINT[array.dtype.itemsize])
    if raw.size == 0:
        return HuffmanCoded(array.dtype.str, array.shape, raw[:0], np.zeros(0, np.uint8), b"", 0)
    symbols, inverse, counts = np.unique(raw, return_inverse=True, return_counts=True)
    lengths = _code_lengths(counts)
    order = np.lexsort((symbols, lengths))
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    symbols, lengths = symbols[order], lengths[order]
    codes = _canonical_codes(lengths)
    element = rank[inverse.reshape(-1)]
    chunks = [
        _bits_of(codes[element[i : i + 65536]], lengths[element[i : i + 65536]])
        for i in range(0, len(element), 65536)
    ]
    stream = np.concatenate(chunks)
    coded = HuffmanCoded(
        array.dtype.str,
        array.shape,
        symbols,
        lengths.astype(np.uint8),
        np.packbits(stream).tobytes(),
        int(stream.size),
    )
    if coded.coded_bytes <= array.nbytes + HEADER_BYTES:
        return coded
    empty = np.zeros(0, np.uint8)
    return HuffmanCoded(
        array.dtype.str, array.shape, raw[:0], empty, raw.tobytes(), 8 * array.nbytes, stored=True
    )


def decode(coded: HuffmanCoded) -> np.ndarray:
    """Gives back the exact array `encode` was given (same dtype, shape and bits)."""
    count = int(np.prod(coded.shape, dtype=np.int64))
    dtype = np.dtype(coded.dtype)
    if count == 0:
        return np.zeros(coded.shape, dtype)
    if coded.stored:
        return np.frombuffer(coded.bits, dtype).reshape(coded.shape).copy()
    lengths = coded.lengths.astype(np.int64)
    width = int(lengths.max())
    aligned = _canonical_codes(lengths) << (width - lengths).astype(np.uint64)
    bits = np.unpackbits(np.frombuffer(coded.bits, np.uint8))[: coded.n_bits]
    bits = np.concatenate([bits, np.zeros(width, np.uint8)]).astype(np.uint64)
    out = np.empty(count, np.int64)
    position, n = 0, 0
    while n < count:
        end = min(position + _BLOCK_BITS, coded.n_bits)
        window = np.zeros(end - position, np.uint64)
        for j in range(width):
            window |= bits[position + j : end + j] << np.uint64(width - 1 - j)
        index = np.searchsorted(aligned, window, side="right") - 1
        step = lengths[index]
        local = 0
        while position + local < end and n < count:
            out[n] = index[local]
            local += int(step[local])
            n += 1
        position += local
    return coded.symbols[out].view(dtype).reshape(coded.shape)


def weight_arrays(model: nn.Module) -> dict[str, np.ndarray]:
    """Returns every stored weight tensor of `model` as numpy, at the precision it is stored.

    Parameters and float buffers are included; integer counters (`num_batches_tracked`) are
    not weights and are left out. Quantized tensors give their integer representation; in a
    PT2E-quantized graph, a weight that the graph quantizes gives the int8 values the graph
    computes from it. A float32 tensor whose values are all exact in float16 (an fp16
    model) is given as float16.
    """
    arrays: dict[str, np.ndarray] = {}

    def add(name: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            if value.is_quantized:
                arrays[name] = value.int_repr().cpu().numpy()
            elif value.is_floating_point():
                arrays[name] = _narrowest(value.detach().cpu().numpy())
        elif isinstance(value, (tuple, list)):
            for i, item in enumerate(value):
                add(f"{name}.{i}", item)

    for name, value in model.state_dict().items():
        add(name, value)
    arrays.update(_graph_quantized_weights(model))
    return arrays


def _narrowest(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.float32 and array.size:
        with np.errstate(over="ignore"):
            half = array.astype(np.float16)
        if half.astype(np.float32).tobytes() == array.tobytes():
            return half
    return array


@torch.no_grad()
def _graph_quantized_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """Integer weights of PT2E graphs: each `quantize_per_*` node applied to a stored tensor."""
    found: dict[str, np.ndarray] = {}
    for prefix, graph_module in model.named_modules():
        if not isinstance(graph_module, torch.fx.GraphModule):
            continue
        for node in graph_module.graph.nodes:
            target = str(node.target)
            if node.op != "call_function" or "quantize_per" not in target or "dequantize" in target:
                continue
            if not node.args or getattr(node.args[0], "op", None) != "get_attr":
                continue
            args = [
                _attr(graph_module, a.target) if getattr(a, "op", None) == "get_attr" else a
                for a in node.args
            ]
            name = f"{prefix}.{node.args[0].target}" if prefix else node.args[0].target
            found[name] = node.target(*args, **node.kwargs).cpu().numpy()
    return found


def _attr(module: nn.Module, dotted: str) -> Any:
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


def huffman_coded_bytes(model: nn.Module) -> int:
    """Returns the Huffman-coded size in bytes of all of `model`'s weights (codebooks included)."""
    return sum(encode(array).coded_bytes for array in weight_arrays(model).values())


@dataclass
class HuffmanParams:
    verify: bool = True


@register_step
class HuffmanStep(CompressionStep):
    """Reports the Huffman-coded size of the weights; the model is left unchanged.

    Parameters:
        verify: decode every tensor again and check it is bit-exact (default true).
    """

    key = "huffman"

    def validate(self, params: dict[str, Any]) -> HuffmanParams:
        check_known(self, params, HuffmanParams)
        verify = params.get("verify", True)
        if not isinstance(verify, bool):
            raise self.error("verify", "true or false", verify)
        return HuffmanParams(verify=verify)

    def apply(self, model: nn.Module, ctx: StepContext) -> tuple[nn.Module, StepReport]:
        per_tensor, raw = {}, 0
        for name, array in weight_arrays(model).items():
            coded = encode(array)
            if self.params.verify and decode(coded).tobytes() != array.tobytes():
                raise RuntimeError(f"huffman: decoding {name} did not give back its weights")
            per_tensor[name] = coded.coded_bytes
            raw += array.size * 4
        total = sum(per_tensor.values())
        figures = {
            "coded_bytes": total,
            "raw_fp32_bytes": raw,
            "compression_ratio": round(raw / total, 3) if total else None,
            "bits_per_weight": round(8 * total / (raw / 4), 3) if raw else None,
            "verified_bit_exact": self.params.verify,
            "tensor_coded_bytes": per_tensor,
        }
        ctx.log(f"huffman: {total} bytes coded vs {raw} bytes fp32")
        return model, StepReport(self.key, figures)


def _code_lengths(counts: np.ndarray) -> np.ndarray:
    """Returns the Huffman code length of each symbol (1 for a lone symbol)."""
    n = len(counts)
    if n == 1:
        return np.ones(1, np.int64)
    parent = np.zeros(2 * n - 1, np.int64)
    heap = [(int(c), i) for i, c in enumerate(counts)]
    heapq.heapify(heap)
    node = n
    while len(heap) > 1:
        c1, a = heapq.heappop(heap)
        c2, b = heapq.heappop(heap)
        parent[a] = parent[b] = node
        heapq.heappush(heap, (c1 + c2, node))
        node += 1
    depth = np.zeros(2 * n - 1, np.int64)
    for i in range(2 * n - 3, -1, -1):  # parents are created after their children
        depth[i] = depth[parent[i]] + 1
    if depth[:n].max() > 56:
        raise ValueError("huffman: code longer than 56 bits; tensor too large to code")
    return depth[:n]


def _canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical code values for lengths sorted ascending (as the symbols are ordered)."""
    codes = np.zeros(len(lengths), np.uint64)
    code = 0
    for i in range(1, len(lengths)):
        code = (code + 1) << int(lengths[i] - lengths[i - 1])
        codes[i] = code
    return codes


def _bits_of(codes: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Expands codes into a flat 0/1 array, each code's bits most significant first."""
    lengths = lengths.astype(np.int64)
    position = np.arange(int(lengths.max()), dtype=np.int64)
    shift = np.clip(lengths[:, None] - 1 - position[None, :], 0, None).astype(np.uint64)
    bits = (codes[:, None] >> shift) & np.uint64(1)
    return bits[position[None, :] < lengths[:, None]].astype(np.uint8)

"""Per-operator profiles on the host: the table a person reads, and the cost of each layer.

The rows come from the device (`Measurement.ops`); which torch module a row belongs to is
known where the runtime keeps module names: the torch profiler rows of a `.pt2` are named
``<module path>:<node>`` (e.g. ``features.0:conv2d``). ONNX Runtime names fused nodes after the
optimised graph (``relu_nchwc``), XNNPACK names its own ops (``Convolution (NHWC, F32) #1``)
and LiteRT gives op types only: their rows map to no layer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from toolkit.errors import ConfigError
from toolkit.measurement import Measurement, OpProfile

MODULE_SEPARATOR = ":"  # torch-profiler rows: "<module path>:<node name>"


@dataclass(frozen=True)
class LayerCost:
    """What a torch module costs per inference on the device, summed over its ops.

    Attributes:
        layer: the module path (``features.0``).
        mean_ms: the module's ops' mean time per inference, in ms.
        share: its part of the profiled total (0..1).
        ops: how many profiled ops belong to it.
    """

    layer: str
    mean_ms: float
    share: float
    ops: int


def layer_of(op: OpProfile) -> str:
    """The torch module a row belongs to, or "" when the runtime did not keep it."""
    module, sep, _ = op.name.rpartition(MODULE_SEPARATOR)
    return module if sep else ""


def layer_costs(ops: Iterable[OpProfile]) -> dict[str, LayerCost]:
    """Module path -> its summed cost, for the rows that map to a module."""
    sums: dict[str, list[float]] = {}
    for op in ops:
        layer = layer_of(op)
        if layer:
            entry = sums.setdefault(layer, [0.0, 0.0, 0])
            entry[0] += op.mean_ms
            entry[1] += op.share
            entry[2] += 1
    return {k: LayerCost(k, ms, share, int(n)) for k, (ms, share, n) in sums.items()}


def cost_of(layer: str, costs: dict[str, LayerCost]) -> Union[LayerCost, None]:
    """The cost of `layer` and its submodules (an attention block, a residual block)."""
    parts = [c for name, c in costs.items() if name == layer or name.startswith(layer + ".")]
    if not parts:
        return None
    return LayerCost(
        layer, sum(c.mean_ms for c in parts), sum(c.share for c in parts), sum(c.ops for c in parts)
    )


def ops_lines(
    ops: Sequence[OpProfile], source: str = "", note: str = "", limit: int = 20
) -> list[str]:
    """The per-operator table as text: name, type, calls, mean ms, share, and the layer
    where known; the costliest first (file order where there are no times)."""
    if not ops:
        return [f"per-op     none returned{': ' + note if note else ''}"]
    timed = any(op.mean_ms > 0 for op in ops)
    ordered = sorted(ops, key=lambda op: -op.mean_ms) if timed else list(ops)
    name_w = min(max(len(op.name) for op in ordered[:limit]), 48)
    type_w = min(max(len(op.op_type) for op in ordered[:limit]), 32)
    lines = [f"per-op     {len(ops)} ops from {source or 'the runtime'}"]
    lines.append(f"  {'name':<{name_w}}  {'type':<{type_w}}  calls  mean ms   share")
    for op in ordered[:limit]:
        ms = f"{op.mean_ms:8.4f}" if timed else f"{'-':>8}"
        share = f"{op.share:6.1%}" if timed else f"{'-':>6}"
        lines.append(
            f"  {op.name[:name_w]:<{name_w}}  {op.op_type[:type_w]:<{type_w}}  "
            f"{op.calls:>5}  {ms}  {share}"
        )
    if len(ordered) > limit:
        rest = ordered[limit:]
        lines.append(
            f"  … {len(rest)} more ({sum(op.share for op in rest):.1%} of the total)"
            if timed
            else f"  … {len(rest)} more"
        )
    costs = layer_costs(ops)
    if costs:
        top = sorted(costs.values(), key=lambda c: -c.mean_ms)[:5]
        lines.append(
            "  by layer: " + ", ".join(f"{c.layer} {c.mean_ms:.3g} ms ({c.share:.0%})" for c in top)
        )
    if note:
        lines.append(f"  note: {note}")
    return lines


def load_ops(path: Union[str, Path]) -> tuple[OpProfile, ...]:
    """The per-op rows of a measurement JSON (`edgeloop profile MODEL --per-op --json`).

    Raises:
        ConfigError: the file is missing, not such JSON, or holds no per-op rows.
    """
    import json

    path = Path(path)
    try:
        raw = json.loads(path.read_text())
        measurement = Measurement.from_json(raw)
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file (expected edgeloop profile --per-op --json output)"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a measurement JSON ({type(exc).__name__}: {exc})") from None
    if not measurement.ops:
        raise ConfigError(f"{path}: the measurement has no per-op rows (profile with --per-op)")
    return measurement.ops

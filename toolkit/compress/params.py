"""Parameter checks shared by the compression steps; each failure names the recipe key."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from typing import Any, Optional

from toolkit.compress.base import CompressionStep


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_known(step: CompressionStep, params: dict[str, Any], params_cls: type) -> None:
    """Raises the step's error for a parameter name the dataclass `params_cls` does not have."""
    known = [f.name for f in fields(params_cls)]
    for key in params:
        if key not in known:
            raise step.error(str(key), f"one of the parameters {', '.join(known)}", key)


def ratio(
    step: CompressionStep,
    params: dict[str, Any],
    key: str,
    default: Optional[float],
    include_high: bool = False,
    include_low: bool = False,
) -> Optional[float]:
    """Reads a fraction, 0 < x < 1 (bounds included when asked); None if absent and no default."""
    value = params.get(key, default)
    if value is None and default is None:
        return None
    low_ok = _is_number(value) and (value >= 0 if include_low else value > 0)
    if not (low_ok and (value <= 1 if include_high else value < 1)):
        low, high = ("0 <=" if include_low else "0 <"), ("<= 1" if include_high else "< 1")
        raise step.error(key, f"a number with {low} x {high}", value)
    return float(value)


def number(
    step: CompressionStep, params: dict[str, Any], key: str, default: float, minimum: float = 0.0
) -> float:
    """Reads a number strictly greater than `minimum`."""
    value = params.get(key, default)
    if not (_is_number(value) and value > minimum):
        raise step.error(key, f"a number > {minimum:g}", value)
    return float(value)


def integer(
    step: CompressionStep,
    params: dict[str, Any],
    key: str,
    default: int,
    minimum: int = 1,
    maximum: Optional[int] = None,
) -> int:
    """Reads an integer in [minimum, maximum]."""
    value = params.get(key, default)
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    if not ok or (maximum is not None and value > maximum):
        bound = f" and <= {maximum}" if maximum is not None else ""
        raise step.error(key, f"an integer >= {minimum}{bound}", value)
    return int(value)


def choice(
    step: CompressionStep, params: dict[str, Any], key: str, default: Any, options: Iterable[Any]
) -> Any:
    """Reads one of `options`."""
    options = tuple(options)
    value = params.get(key, default)
    if value not in options or isinstance(value, bool) != isinstance(default, bool):
        raise step.error(key, "one of " + ", ".join(str(o) for o in options), value)
    return value


def layer_names(step: CompressionStep, params: dict[str, Any], key: str) -> tuple[str, ...]:
    """Reads an optional list of layer names (names are checked against the model in apply)."""
    value = params.get(key)
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise step.error(key, "a list of layer names", value)
    return tuple(value)


def ratio_map(
    step: CompressionStep, params: dict[str, Any], key: str, allow_zero: bool = False
) -> dict[str, float]:
    """Reads an optional {layer name: fraction} mapping (0 < x < 1; 0 allowed when asked)."""
    value = params.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise step.error(key, "a mapping of layer name to amount", value)
    amounts = {}
    for name, amount in value.items():
        where = f"{key}.{name}"
        amounts[name] = float(ratio(step, {where: amount}, where, 0.0, include_low=allow_zero))
    return amounts

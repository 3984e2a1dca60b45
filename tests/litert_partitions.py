"""The delegate partitions of a `.tflite`, known or skipped: never a pass on an unknown count."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import pytest

from toolkit.export.ops import PartitionsUnknown, delegate_partitions


def known_partitions(path: Union[str, Path]) -> int:
    """How many partitions LiteRT's default XNNPACK delegate makes of `path`; skips the test,
    with the reason, where this LiteRT cannot list them. Any other failure to count raises."""
    try:
        return delegate_partitions(path)
    except PartitionsUnknown as exc:
        pytest.skip(f"delegate partitions cannot be counted here: {exc}")

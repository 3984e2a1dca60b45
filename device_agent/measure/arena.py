"""Finds the smallest TFLite Micro arena that runs a model.

TFLM aborts the process when the arena is too small, so each probe runs in its own short
child process: `python -m device_agent.measure.arena MODEL BYTES` exits 0 when the model
loads and runs one inference with that arena.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Optional

ALIGN = 16
START_BYTES = 64 * 1024
MAX_BYTES = 512 * 1024 * 1024


def probe(path: str, arena_bytes: int, timeout_s: float = 60.0) -> bool:
    """Whether the model runs with `arena_bytes` of arena (in a throwaway child)."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "device_agent.measure.arena", path, str(arena_bytes)],
            capture_output=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def smallest_arena(
    path: str, tolerance_bytes: int = 64, on_probe: Optional[Callable[[int], None]] = None
) -> int:
    """Binary-searches the smallest arena (bytes, 16-aligned) with which the model runs.

    Raises:
        RuntimeError: the model does not run even with MAX_BYTES.
    """
    count = 0

    def ok(size: int) -> bool:
        nonlocal count
        count += 1
        if on_probe:
            on_probe(count)
        return probe(path, size)

    high = START_BYTES
    while not ok(high):
        if high >= MAX_BYTES:
            raise RuntimeError(
                f"model does not run in TFLite Micro even with a {MAX_BYTES}-byte arena"
            )
        high *= 2
    low = 0
    while high - low > max(tolerance_bytes, ALIGN):
        mid = (low + high) // 2 // ALIGN * ALIGN
        if mid <= low:
            break
        if ok(mid):
            high = mid
        else:
            low = mid
    return high


def _main(argv: list[str]) -> int:
    import numpy as np

    from device_agent.measure.inputs import benchmark_inputs
    from device_agent.runtimes.tflm import TFLMRuntime

    path, size = argv[0], int(argv[1])
    model = TFLMRuntime().load(path, arena_bytes=size)
    model.set_inputs(benchmark_inputs(model.inputs))
    model.run()
    outputs = model.get_outputs()
    return 0 if all(np.asarray(o).size for o in outputs) else 1


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

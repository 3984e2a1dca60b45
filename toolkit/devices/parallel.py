"""Work on many devices at once: bounded concurrency, per-device timeouts, progress.

`run_bounded` runs one job per device with at most `max_parallel` in flight. A job that
raises is that device's failure; a job still running at its timeout is that device's named
failure too, and its slot goes to the next device (the late thread is left to finish on its
own — every client call has its own deadline — and its result is dropped). Results come back
in the devices' order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Optional, TypeVar

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_MAX_PARALLEL = 32


@dataclass(frozen=True)
class Done(Generic[T, R]):
    """One item's outcome.

    Attributes:
        item: What the job ran on (a device profile).
        value: The job's return value; None when it raised or timed out.
        error: One line: why it failed ("" when it returned).
        timed_out: The job was still running at the timeout.
        seconds: Wall time until it returned, raised or timed out.
    """

    item: T
    value: Optional[R]
    error: str = ""
    timed_out: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass(frozen=True)
class Tally:
    """Where a fleet job stands: done (returned), failed (raised or timed out), remaining."""

    total: int
    done: int
    failed: int
    in_flight: int

    @property
    def remaining(self) -> int:
        return self.total - self.done - self.failed


def run_bounded(
    items: Sequence[T],
    job: Callable[[T], R],
    max_parallel: int = DEFAULT_MAX_PARALLEL,
    timeout_s: float = 0.0,
    on_done: Optional[Callable[[Done[T, R], Tally], None]] = None,
    failed: Optional[Callable[[R], bool]] = None,
    name: str = "device",
) -> list[Done[T, R]]:
    """Runs `job` on every item, at most `max_parallel` at once, each within `timeout_s`.

    Args:
        items: The devices (any objects).
        job: Called once per item in a worker thread.
        max_parallel: Most jobs in flight (at least 1).
        timeout_s: Per-item limit in seconds, counted from the job's start (0: none).
        on_done: Called in the caller's thread with each outcome as it arrives, and the tally.
        failed: Says whether a returned value counts as failed in the tally (e.g. a device
            report that did not pass); default: returned means done.
        name: Thread name prefix.

    Returns:
        One `Done` per item, in the items' order.
    """
    if max_parallel < 1:
        raise ValueError(f"max_parallel: expected at least 1, got {max_parallel}")
    results: list[Optional[Done[T, R]]] = [None] * len(items)
    finished: list[tuple[int, Done[T, R]]] = []
    cond = threading.Condition()
    started_at: dict[int, float] = {}
    next_index, done_n, failed_n = 0, 0, 0

    def worker(index: int, started: float) -> None:
        try:
            value: Optional[R] = job(items[index])
            outcome = Done(items[index], value, seconds=time.monotonic() - started)
        except Exception as exc:  # noqa: BLE001 - a device's failure is its outcome
            outcome = Done(items[index], None, _one_line(exc), seconds=time.monotonic() - started)
        with cond:
            finished.append((index, outcome))
            cond.notify()

    with cond:
        while done_n + failed_n < len(items):
            while next_index < len(items) and len(started_at) < max_parallel:
                now = time.monotonic()
                started_at[next_index] = now
                threading.Thread(
                    target=worker, args=(next_index, now), daemon=True, name=f"{name}-{next_index}"
                ).start()
                next_index += 1
            wait = None
            if timeout_s > 0 and started_at:
                wait = max(0.0, min(started_at.values()) + timeout_s - time.monotonic())
            if not finished:
                cond.wait(wait)
            arrived = [(i, d) for i, d in finished if i in started_at]
            finished.clear()
            if timeout_s > 0:
                now = time.monotonic()
                for i, t0 in list(started_at.items()):
                    if now - t0 >= timeout_s and all(i != j for j, _ in arrived):
                        arrived.append(
                            (
                                i,
                                Done(
                                    items[i],
                                    None,
                                    f"timed out after {timeout_s:g} s",
                                    timed_out=True,
                                    seconds=now - t0,
                                ),
                            )
                        )
            for i, outcome in arrived:
                del started_at[i]
                results[i] = outcome
                bad = not outcome.ok or (failed is not None and failed(outcome.value))
                failed_n, done_n = failed_n + bad, done_n + (not bad)
                if on_done is not None:
                    tally = Tally(len(items), done_n, failed_n, len(started_at))
                    cond.release()  # the callback may print; workers may finish meanwhile
                    try:
                        on_done(outcome, tally)
                    finally:
                        cond.acquire()
    return [r for r in results if r is not None]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:400]

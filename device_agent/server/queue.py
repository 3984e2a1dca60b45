"""One benchmark at a time per device, first come first served."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Callable


class BenchmarkQueue:
    """A FIFO ticket lock; `position()` tells a waiter how many are ahead of it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._tickets = itertools.count()
        self._serving = 0
        self._issued = 0

    @property
    def waiting(self) -> int:
        with self._cond:
            return self._issued - self._serving

    @contextmanager
    def turn(self, on_wait: Callable[[int], None], cancelled: Callable[[], bool]) -> Iterator[bool]:
        """Waits for this caller's turn; yields False when it gave up (cancelled)."""
        with self._cond:
            ticket = next(self._tickets)
            self._issued += 1
        got_turn = False
        try:
            with self._cond:
                while ticket != self._serving:
                    on_wait(ticket - self._serving)
                    self._cond.wait(timeout=0.5)
                    if cancelled():
                        break
                got_turn = ticket == self._serving
            yield got_turn
        finally:
            with self._cond:
                if got_turn:
                    self._serving += 1
                else:
                    # A cancelled waiter must not block the ones after it: mark its ticket done
                    # by waiting for its turn in the background.
                    threading.Thread(target=self._skip, args=(ticket,), daemon=True).start()
                self._cond.notify_all()

    def _skip(self, ticket: int) -> None:
        with self._cond:
            while ticket != self._serving:
                self._cond.wait()
            self._serving += 1
            self._cond.notify_all()

"""Latency samples kept in memory allocated before the model loads.

Peak RSS is read after the timed loop, so it covers what the model allocates while it runs;
the harness must then not grow memory of its own during the loop, or a long run of a fast
model (8 bytes a run: 80 MB for ten million runs) would count as the model's. The samples go
into one block allocated (and touched) before the baseline reading; when it fills, its
content is appended to an anonymous temporary file (file pages are not the process's
resident memory) and the block is reused. They are read back after the peak is taken.
"""

from __future__ import annotations

import tempfile
from array import array
from typing import IO, Optional

CAPACITY = 65_536
"""Samples held in memory (512 KB); more spill to a temporary file, 512 KB at a time."""


class SampleBuffer:
    """A fixed block of doubles plus a spill file; `_loop` in harness.py writes `block`."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.block = array("d", bytes(8 * capacity))  # zeros: every page touched now
        self.n = 0  # samples in the block
        self._spilled = 0
        self._file: Optional[IO[bytes]] = None

    @property
    def capacity(self) -> int:
        return len(self.block)

    def __len__(self) -> int:
        return self._spilled + self.n

    def spill(self) -> None:
        """Moves the block's samples to the spill file (called when the block is full)."""
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="edgeloop-samples-", buffering=0)
        view = memoryview(self.block).cast("B")[: 8 * self.n]  # no copy: written in place
        while view:
            view = view[self._file.write(view) :]
        self._spilled += self.n
        self.n = 0

    def clear(self) -> None:
        """Forgets every sample (keeps the block)."""
        self.n, self._spilled = 0, 0
        if self._file is not None:
            self._file.close()
            self._file = None

    def values(self) -> array:
        """Every sample in order, as a new array (allocates: call after reading the peak)."""
        out = array("d")
        if self._file is not None:
            self._file.seek(0)
            out.frombytes(self._file.read())
        out.extend(self.block[: self.n])
        return out

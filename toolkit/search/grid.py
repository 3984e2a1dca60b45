"""Exhaustive search over a small space: the baseline the other strategies are judged against."""

from __future__ import annotations

from collections.abc import Sequence

from toolkit.search.base import Candidate, Strategy, Trial


class GridSearch(Strategy):
    """Runs every point of the space once, in the space's order, up to `max_trials`.

    A point whose candidate equals one already run (the base, typically) is skipped, not rerun.
    """

    name = "grid"

    def ask(self, history: Sequence[Trial]) -> list[Candidate]:
        done = {t.candidate.key for t in history}
        left = self.remaining(history)
        batch: list[Candidate] = []
        for params in self.space.grid():
            if len(batch) >= left:
                break
            candidate = self.space.candidate(params, note="grid")
            if candidate.key not in done:
                batch.append(candidate)
                done.add(candidate.key)
        return batch[:1]

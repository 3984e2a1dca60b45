"""Non-dominated sorting: which points no other point beats on every objective at once."""

from __future__ import annotations

from collections.abc import Sequence

MAXIMIZE = "max"
MINIMIZE = "min"


def dominates(a: Sequence[float], b: Sequence[float], senses: Sequence[str]) -> bool:
    """True when `a` is at least as good as `b` on every objective and better on one.

    Args:
        a: objective values of the first point.
        b: objective values of the second point, same order.
        senses: `"max"` or `"min"` per objective.
    """
    better = False
    for x, y, sense in zip(a, b, senses):
        if sense == MAXIMIZE:
            x, y = -x, -y
        if x > y:
            return False
        if x < y:
            better = True
    return better


def non_dominated_sort(points: Sequence[Sequence[float]], senses: Sequence[str]) -> list[int]:
    """Ranks points by Pareto front (0: the non-dominated front, 1: the front behind it, ...).

    Args:
        points: one tuple of objective values per point.
        senses: `"max"` or `"min"` per objective.

    Returns:
        The front rank of each point, in the order given.
    """
    for sense in senses:
        if sense not in (MAXIMIZE, MINIMIZE):
            raise ValueError(f"objective sense: expected 'max' or 'min', got {sense!r}")
    n = len(points)
    dominated_by: list[list[int]] = [[] for _ in range(n)]
    counts = [0] * n
    for i in range(n):
        for j in range(i + 1, n):
            if dominates(points[i], points[j], senses):
                dominated_by[i].append(j)
                counts[j] += 1
            elif dominates(points[j], points[i], senses):
                dominated_by[j].append(i)
                counts[i] += 1
    ranks = [0] * n
    front = [i for i in range(n) if counts[i] == 0]
    rank = 0
    while front:
        following = []
        for i in front:
            ranks[i] = rank
            for j in dominated_by[i]:
                counts[j] -= 1
                if counts[j] == 0:
                    following.append(j)
        front = following
        rank += 1
    return ranks


def pareto_front(points: Sequence[Sequence[float]], senses: Sequence[str]) -> list[int]:
    """Indices of the non-dominated points, in the order given."""
    return [i for i, rank in enumerate(non_dominated_sort(points, senses)) if rank == 0]

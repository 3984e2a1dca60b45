"""`StrEnum`: enum members that are their text, on every Python the host supports (3.10+).

`enum.StrEnum` arrived in Python 3.11; this is the same contract for 3.10 (JetPack 6, Ubuntu
22.04): a member is a `str`, compares equal to its value, and `str()`/`format()` give the value.
"""

from __future__ import annotations

import enum


class StrEnum(str, enum.Enum):
    """Base of the host's text-valued enums (`enum.StrEnum` of Python 3.11, for 3.10 too)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @staticmethod
    def _generate_next_value_(name: str, start: int, count: int, last_values: list) -> str:
        """`enum.auto()` gives the member's name in lower case, as `enum.StrEnum` does."""
        return name.lower()

"""Text that came from outside (model names, device-reported strings) made safe to print."""

from __future__ import annotations

import unicodedata


def printable(text: object, limit: int = 200) -> str:
    """`text` with control and format characters removed (terminal escape sequences lose
    their ESC, NUL and bidi overrides disappear), cut to `limit` characters."""
    kept = "".join(c for c in str(text) if unicodedata.category(c) not in ("Cc", "Cf", "Cs"))
    return kept[:limit]

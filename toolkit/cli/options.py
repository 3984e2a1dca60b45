"""Options several commands share, and what they resolve to."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


def verbose_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`-v/--verbose`: show third-party output instead of writing it to edgeloop.log."""
    return click.option(
        "-v", "--verbose", is_flag=True,
        help="Show third-party output (warnings, converter logs) on the terminal instead of "
             "writing it to edgeloop.log in the output folder.",
    )(fn)


def verbose_asked(flag: bool) -> bool:
    """True when -v was given to this command or to `edgeloop` itself."""
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root().obj if ctx is not None else None
    return bool(flag or (isinstance(root, dict) and root.get("verbose")))

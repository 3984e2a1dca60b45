"""The user's label for the rows a command writes (`--tag LABEL`, e.g. a git sha).

One owner: the `EDGELOOP_TAG` environment variable, which the CLI's `--tag` sets, so a command's
stores and the processes it starts (Ray workers, helpers) label their rows alike.
"""

from __future__ import annotations

import os
from typing import Optional

ENV_VAR = "EDGELOOP_TAG"


def select_tag(tag: Optional[str]) -> None:
    """Labels every row this process (and its children) writes from now on with `tag`."""
    if tag:
        os.environ[ENV_VAR] = tag


def current_tag() -> Optional[str]:
    """The label rows get now (None: none given)."""
    return os.environ.get(ENV_VAR) or None

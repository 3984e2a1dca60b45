"""Where a tuning run's candidates are built and its measurements taken.

`local` (the default) builds on this host's cores and talks to the devices directly; `ray`
builds candidates as Ray tasks across a cluster and measures through one Ray actor per device.
Both implement `toolkit.tune.executors.base.Executor`; the runner calls nothing else.
"""

from __future__ import annotations

from typing import Optional

from toolkit.errors import ConfigError
from toolkit.tune.executors.base import Executor

EXECUTORS = ("local", "ray")


def make_executor(name: str = "local", ray_address: Optional[str] = None) -> Executor:
    """The executor called `name`; Ray is imported only for "ray".

    Raises:
        ConfigError: an unknown name, or --ray-address without --executor ray.
    """
    if name == "local":
        if ray_address:
            raise ConfigError("tune: --ray-address needs --executor ray")
        from toolkit.tune.executors.local import LocalExecutor

        return LocalExecutor()
    if name == "ray":
        from toolkit.tune.executors.ray_executor import RayExecutor

        return RayExecutor(ray_address)
    raise ConfigError(f"tune: --executor: expected one of {EXECUTORS}, got {name!r}")


__all__ = ["EXECUTORS", "Executor", "make_executor"]

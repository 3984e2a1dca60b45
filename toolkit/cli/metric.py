"""`--metric` and `--metric-direction`, shared by `evaluate` and `validate`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import click

METRIC_HELP = ("Quality metric: top1, top5, f1, mse, psnr, miou, perplexity, map50, map50_95, "
               "or a user's module:function / path/to/metrics.py:function(outputs, targets) "
               "-> float (give --metric-direction).")


def metric_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`--metric NAME` and `--metric-direction higher|lower`."""
    fn = click.option("--metric-direction", type=click.Choice(["higher", "lower"]),
                      help="Whether a higher or a lower value of a user's --metric is better.")(fn)
    return click.option("--metric", default=None, help=METRIC_HELP)(fn)


def resolve_metric(spec: Optional[str], direction: Optional[str]) -> Any:
    """The `quality.Metric` for `--metric` (None when not given).

    Raises:
        click.UsageError: an unknown metric or a user metric without a direction (exit 2).
    """
    if not spec:
        if direction:
            raise click.UsageError("--metric-direction needs --metric")
        return None
    from toolkit.errors import ConfigError
    from toolkit.quality import get_metric

    try:
        return get_metric(spec, direction)
    except ConfigError as exc:
        if type(exc) is not ConfigError:  # a SetupError: the user's file failed to import
            raise
        raise click.UsageError(str(exc)) from None

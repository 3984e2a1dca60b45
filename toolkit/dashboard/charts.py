"""Plotly figures as HTML divs. plotly.js itself is served once, from the installed `plotly`
package, at `PLOTLY_JS_ROUTE` (the pages work offline; nothing comes from a CDN)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

PLOTLY_JS_ROUTE = "/static/plotly.min.js"
_CONFIG = {"displaylogo": False, "responsive": True}
_LAYOUT = {
    "margin": {"l": 60, "r": 20, "t": 40, "b": 50},
    "height": 380,
    "template": "plotly_white",
}


def plotly_js_path() -> Path:
    """plotly.min.js as the installed `plotly` package ships it."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the plotly package ships no plotly.min.js")
    return path


def to_div(fig: Any, div_id: Optional[str] = None) -> str:
    """The figure as an empty <div> and its JSON in a data block (`<script
    type="application/json">`, which never runs) that /static/dashboard.js draws: the pages
    hold no inline script, so the Content-Security-Policy allows only the dashboard's files.
    `<`, `>` and `&` are escaped in the JSON, so no text in a figure can close the block."""
    import json
    from html import escape
    from uuid import uuid4

    div_id = div_id or f"chart-{uuid4().hex[:12]}"
    spec = f'{{"figure": {fig.to_json()}, "config": {json.dumps(_CONFIG)}}}'
    for char, code in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        spec = spec.replace(char, code)
    height = fig.layout.height or _LAYOUT["height"]
    return (
        f'<div id="{escape(div_id)}" class="plotly-graph-div" '
        f'style="height:{int(height)}px; width:100%;"></div>'
        f'<script type="application/json" class="plotly-figure" data-for="{escape(div_id)}">'
        f"{spec}</script>"
    )


def distributions(
    groups: Mapping[str, Sequence[float]],
    title: str,
    kind: str = "box",
    div_id: Optional[str] = None,
) -> str:
    """Latency distributions (ms) side by side, one box (or violin) per group of raw samples."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, samples in groups.items():
        if kind == "violin":
            fig.add_trace(
                go.Violin(
                    y=list(samples),
                    name=name,
                    box_visible=True,
                    meanline_visible=True,
                    points=False,
                )
            )
        else:
            fig.add_trace(go.Box(y=list(samples), name=name, boxpoints=False))
    if kind == "violin":  # a density needs a linear axis; the far tail would flatten it
        top = max(float(np.percentile(list(s), 99)) for s in groups.values() if len(s))
        axis = {
            "yaxis_title": "latency (ms; axis up to the 99th percentile)",
            "yaxis_range": [0, top * 1.1],
        }
    else:
        axis = {"yaxis_title": "latency (ms, log scale)", "yaxis_type": "log"}
    fig.update_layout(title=title, showlegend=False, **axis, **_LAYOUT)
    return to_div(fig, div_id)


def history_lines(
    series: Mapping[str, tuple[Sequence[str], Sequence[Optional[float]]]],
    flagged: Mapping[str, tuple[Sequence[str], Sequence[float]]],
    metric: str,
    title: str,
) -> str:
    """One line per device over groups (days or tags); flagged changes as red markers."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for device, (groups, values) in series.items():
        fig.add_trace(go.Scatter(x=list(groups), y=list(values), mode="lines+markers", name=device))
    for device, (groups, values) in flagged.items():
        if groups:
            fig.add_trace(
                go.Scatter(
                    x=list(groups),
                    y=list(values),
                    mode="markers",
                    name=f"{device}: change beyond noise",
                    marker={
                        "color": "red",
                        "size": 14,
                        "symbol": "circle-open",
                        "line": {"width": 3},
                    },
                )
            )
    fig.update_layout(title=title, yaxis_title=f"{metric} (ms)", xaxis_type="category", **_LAYOUT)
    return to_div(fig)


def pareto_figure(
    points: Sequence[Mapping[str, Any]], front: Sequence[int], budget: Optional[float]
) -> Any:
    """Accuracy against worst p90 latency for every judged trial; the front joined by a line,
    the latency budget as a vertical line."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[p["latency"] for p in points],
            y=[p["accuracy"] for p in points],
            mode="markers",
            name="trials",
            text=[f"trial {p['number']}" for p in points],
        )
    )
    ordered = sorted((points[i] for i in front), key=lambda p: p["latency"])
    fig.add_trace(
        go.Scatter(
            x=[p["latency"] for p in ordered],
            y=[p["accuracy"] for p in ordered],
            mode="lines+markers",
            name="Pareto front",
            line={"color": "firebrick"},
        )
    )
    if budget is not None and points:
        accuracies = [p["accuracy"] for p in points]
        fig.add_trace(
            go.Scatter(
                x=[budget, budget],
                y=[min(accuracies), max(accuracies)],
                mode="lines",
                name=f"budget {budget:.4g} ms",
                line={"color": "gray", "dash": "dash"},
            )
        )
    fig.update_layout(
        title="Pareto front",
        xaxis_title="worst p90 latency (ms)",
        yaxis_title="accuracy (%)",
        **_LAYOUT,
    )
    return fig


def trajectory_figure(
    numbers: Sequence[int],
    values: Sequence[Optional[float]],
    best: Sequence[Optional[float]],
    metric: str,
) -> Any:
    """The search's trajectory: each trial's value and the best feasible so far."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_trace(go.Scatter(x=list(numbers), y=list(values), mode="markers", name=metric))
    fig.add_trace(
        go.Scatter(
            x=list(numbers), y=list(best), mode="lines", name="best so far", line={"shape": "hv"}
        )
    )
    fig.update_layout(title="Search trajectory", xaxis_title="trial", yaxis_title=metric, **_LAYOUT)
    return fig

"""report.html: a self-contained page (PNG plots embedded) a person reads after a run.

Plots: accuracy vs worst-case p90 latency with the Pareto front and the budget lines; the
latency distributions of the base and the chosen model on each device (box plots of the raw
samples); the search trajectory (accuracy per trial and the best feasible so far). Where the
measurements carry a per-operator profile (`bench: {per_op: true}`), the base and chosen
models' operator tables, with the torch module each op maps to, so a reader sees which layer
costs most.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

from toolkit.search.base import CandidateKind, Trial
from toolkit.tune.budgets import ResolvedBudgets
from toolkit.tune.result import TuneResult, judged_trials, table_lines

Samples = Mapping[str, Sequence[float]]  # "base on local" -> raw latency samples, ms
OpTables = Mapping[str, Any]  # "base on local" -> a Measurement carrying ops


def write_report(path: Path, result: TuneResult, history: Sequence[Trial],
                 budgets: ResolvedBudgets, front: Sequence[Trial], samples: Samples,
                 ops: Optional[OpTables] = None) -> Path:
    """Writes report.html and returns its path; `ops` adds the per-operator tables."""
    import matplotlib

    matplotlib.use("Agg")
    chosen = next((t for t in history if result.best and t.number == result.best["trial"]), None)
    images = [
        ("Accuracy vs latency", _png(_tradeoff, history, budgets, front, chosen)),
        ("Latency distributions: base vs chosen", _png(_boxplot, samples)),
        ("Search trajectory", _png(_trajectory, history)),
    ]
    verdict = "feasible" if result.feasible else "INFEASIBLE"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>edgeloop tune {html.escape(result.run_id)}</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
        "pre{background:#f6f6f6;padding:1em;overflow-x:auto}img{max-width:100%}"
        "td,th{padding:2px 8px;text-align:left}</style></head><body>",
        f"<h1>edgeloop tune: {html.escape(result.model)} ({html.escape(result.strategy)})</h1>",
        f"<p><b>{verdict}</b>: {html.escape(result.message)}</p>",
        _facts(result),
        "<h2>Budgets</h2><pre>" + html.escape("\n".join(budgets.describe())) + "</pre>",
    ]
    if result.best:
        parts.append("<h2>Chosen model</h2>" + _best(result.best))
    for title, data in images:
        parts.append(f"<h2>{html.escape(title)}</h2>")
        parts.append(f"<img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>"
                     if data else "<p>nothing to plot</p>")
    if ops:
        parts.append(_ops_section(ops))
    parts.append("<h2>Trials</h2><pre>"
                 + html.escape("\n".join(table_lines(history, chosen, limit=500))) + "</pre>")
    parts.append("</body></html>")
    Path(path).write_text("\n".join(parts))
    return Path(path)


def _ops_section(ops: OpTables) -> str:
    from toolkit.op_costs import ops_lines

    parts = ["<h2>Where the time goes (per operator)</h2>"]
    for label, m in ops.items():
        parts.append(f"<h3>{html.escape(label)}</h3><pre>"
                     + html.escape("\n".join(ops_lines(m.ops, m.ops_source, m.ops_note)))
                     + "</pre>")
    return "".join(parts)


def _facts(result: TuneResult) -> str:
    devices = ", ".join(f"{d['label']} ({d.get('hostname', '')}, {d.get('arch', '')})"
                        for d in result.devices)
    rows = [("run", result.run_id), ("data", result.data), ("devices", devices),
            ("trials", str(result.trials)),
            ("device measurements", f"{result.measurements} ({result.new_measurements} new)")]
    if result.stopped:
        rows.append(("stopped", result.stopped))
    return "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                               for k, v in rows) + "</table>"


def _best(best: Mapping[str, Any]) -> str:
    lines = [f"trial {best['trial']}: {best['note'] or best['kind']}",
             f"accuracy {best['accuracy_pct']:.2f}% (on {best['accuracy_on']})",
             f"artifact {best['artifact']}", f"recipe {best['recipe']}",
             f"threads {best['threads'] or 'default'}"]
    for label, f in best["figures"].items():
        lines.append(f"{label}: p90 {_fmt(f['latency_p90_ms'])} ms, p50 {_fmt(f['latency_p50_ms'])}"
                     f" ms, memory {_fmt(f['memory_mb'])} MB, size {_fmt(f['size_kb'])} KB"
                     + (f", energy {_fmt(f['energy_mj'])} mJ" if f.get("energy_mj") else ""))
    lines += [f"violates: {v}" for v in best["violations"]]
    return "<pre>" + html.escape("\n".join(lines)) + "</pre>"


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4g}"


def _png(draw: Any, *args: Any) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    try:
        if draw(ax, *args) is False:
            return ""
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        return base64.b64encode(buf.getvalue()).decode()
    finally:
        plt.close(fig)


def _tradeoff(ax: Any, history: Sequence[Trial], budgets: ResolvedBudgets,
              front: Sequence[Trial], chosen: Optional[Trial]) -> Optional[bool]:
    trials = [t for t in judged_trials(history) if "latency_p90_ms" in t.worst]
    if not trials:
        return False
    groups = ((True, "tab:green", "feasible"), (False, "tab:gray", "infeasible"))
    for feasible, color, label in groups:
        group = [t for t in trials if t.feasible == feasible]
        ax.scatter([t.worst["latency_p90_ms"] for t in group], [t.accuracy_pct for t in group],
                   c=color, label=label, s=24)
    ax.plot([t.worst["latency_p90_ms"] for t in front], [t.accuracy_pct for t in front],
            "-o", c="tab:blue", mfc="none", label="Pareto front")
    if chosen is not None and "latency_p90_ms" in chosen.worst:
        ax.scatter([chosen.worst["latency_p90_ms"]], [chosen.accuracy_pct], marker="*", s=220,
                   c="tab:red", label=f"chosen (trial {chosen.number})", zorder=5)
    for device, limits in budgets.limits.items():
        if "latency_p90_ms" in limits:
            ax.axvline(limits["latency_p90_ms"], ls="--", c="tab:red", lw=1)
            ax.annotate(f"p90 budget {device}", (limits["latency_p90_ms"], ax.get_ylim()[0]),
                        rotation=90, va="bottom", ha="right", fontsize=8, color="tab:red")
    if budgets.min_accuracy_pct is not None:
        ax.axhline(budgets.min_accuracy_pct, ls=":", c="tab:orange", lw=1, label="accuracy limit")
    ax.set_xlabel("p90 latency, worst device (ms)")
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=8)
    return None


def _boxplot(ax: Any, samples: Samples) -> Optional[bool]:
    usable = {k: list(v) for k, v in samples.items() if v}
    if not usable:
        return False
    ax.boxplot(list(usable.values()), showfliers=False)
    ax.set_xticks(range(1, len(usable) + 1), list(usable), fontsize=8)
    ax.set_ylabel("latency per inference (ms)")
    ax.set_title("raw timed runs (outliers hidden)", fontsize=9)
    return None


def _trajectory(ax: Any, history: Sequence[Trial]) -> Optional[bool]:
    trials = [t for t in history if t.judged]
    if not trials:
        return False
    ax.scatter([t.number for t in trials], [t.accuracy_pct for t in trials],
               c=["tab:green" if t.feasible else "tab:gray" for t in trials], s=20,
               label="trial (green: feasible)")
    best, xs, ys = None, [], []
    for t in history:
        if t.feasible and t.judged and (best is None or t.accuracy_pct > best):
            best = t.accuracy_pct
        if best is not None:
            xs.append(t.number)
            ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", c="tab:blue", label="best feasible so far")
    probes = [t.number for t in history if t.candidate.kind == CandidateKind.PROBE]
    for number in probes:
        ax.axvline(number, c="#ddd", lw=3, zorder=0)
    ax.set_xlabel("trial (grey bands: measurement-only probes)" if probes else "trial")
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=8)
    return None

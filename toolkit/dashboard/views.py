"""The pages: each function reads through `queries`, builds its charts through `charts`, and
returns the template's context. No SQL here, and no HTML beyond the templates."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import Engine

from toolkit.dashboard import charts, queries
from toolkit.dashboard.queries import MeasurementFilter, Tables

MAX_CHART_GROUPS = 12
COMPARE_MAX_ROUNDS = 6
HISTORY_RUNS_PER_GROUP = 3
HISTORY_CHANGES_CHECKED = 2
"""Consecutive changes per device tested against the noise (the latest ones): each test is
`toolkit.stats.compare_rounds` over the groups' latest runs."""
HISTORY_RESAMPLES = 500


LISTS_TTL_S = 60.0
"""How old the lists of what exists (devices, models, runtimes, options, tags) may get before
they are read again, in the background: each is a scan of the whole measurements table."""


JUDGED_KEPT = 4096
"""Noise tests of history changes kept in memory (each is a bootstrap; rows never change)."""


@dataclass
class Source:
    """What every page reads: the read-only engine, the tables it holds, its URL for display,
    and the lists of what exists (kept for `LISTS_TTL_S`, then refreshed in the background
    while the old list is still served)."""

    engine: Engine
    tables: Tables
    url: str
    lists_ttl_s: float = LISTS_TTL_S  # 0: read the lists on every request
    _lists: dict[tuple, tuple[float, Any]] = field(default_factory=dict, repr=False)
    _refreshing: set[tuple] = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _judged: dict[tuple, Any] = field(default_factory=dict, repr=False)

    def judged(
        self, a_ids: tuple[int, ...], b_ids: tuple[int, ...], compute: Callable[[], Any]
    ) -> Any:
        """`compute()` once per pair of stored runs (rows never change once written)."""
        key = (a_ids, b_ids)
        if key not in self._judged:
            if len(self._judged) >= JUDGED_KEPT:
                self._judged.clear()
            self._judged[key] = compute()
        return self._judged[key]

    def listed(self, query: Callable[..., Any], *args: Any) -> Any:
        """`query(engine, tables, *args)`: read now the first time, then reused; once older
        than `lists_ttl_s` it is read again in a background thread (one at a time per list)
        while the old list is still served."""
        key = (query, *args)
        if self.lists_ttl_s <= 0:
            return query(self.engine, self.tables, *args)
        found = self._lists.get(key)
        if found is None:
            return self._read(key)
        if time.monotonic() - found[0] >= self.lists_ttl_s:
            with self._lock:
                start = key not in self._refreshing
                self._refreshing.add(key)
            if start:
                threading.Thread(
                    target=self._read, args=(key,), daemon=True, name="dashboard-lists"
                ).start()
        return found[1]

    def _read(self, key: tuple) -> Any:
        try:
            value = key[0](self.engine, self.tables, *key[1:])
            self._lists[key] = (time.monotonic(), value)
            return value
        finally:
            with self._lock:
                self._refreshing.discard(key)

    def prime(self) -> None:
        """Reads the catalog every page's lists come from (the first requests find it)."""
        self.listed(queries.catalog)


def when(ts: Optional[float]) -> str:
    """Unix seconds as 'YYYY-MM-DD HH:MM:SS' UTC ('' for None)."""
    if ts is None or (isinstance(ts, float) and math.isnan(ts)):
        return ""
    return datetime.fromtimestamp(float(ts), tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def parse_day(text: str, end: bool = False) -> Optional[float]:
    """'YYYY-MM-DD' (UTC) as Unix seconds: the day's start, or its end with `end`.

    Raises:
        ValueError: not a date in that form (the page shows the message).
    """
    if not text:
        return None
    try:
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=timezone.utc)
    except ValueError:
        raise ValueError(f"{text!r}: expected a date as YYYY-MM-DD") from None
    return day.timestamp() + (86400 - 1e-3 if end else 0.0)


# -- devices -----------------------------------------------------------------------------------


def devices_page(src: Source) -> dict[str, Any]:
    from toolkit.dashboard.live import fleet_devices

    fleet, problems = fleet_devices()
    seen = queries.seen_devices(src.listed(queries.catalog))
    return {"fleet": fleet, "fleet_problems": problems, "seen": seen}


def live_devices(src: Source) -> list[dict[str, Any]]:
    """The live check of every fleet device, with the last measurement of the device id it
    reported (from the results database)."""
    from toolkit.dashboard.live import check_all

    seen = {d.device_id: d for d in queries.seen_devices(src.listed(queries.catalog))}
    out = []
    for state in check_all():
        row = state.to_json()
        known = seen.get(state.device_id)
        row["last_measurement"] = when(known.last_timestamp) if known else ""
        row["measurements"] = known.measurements if known else 0
        out.append(row)
    return out


# -- measurements ------------------------------------------------------------------------------


def measurement_filter(params: Mapping[str, str]) -> MeasurementFilter:
    """The filter from the query string; raises ValueError on a bad date."""
    return MeasurementFilter(
        device=params.get("device", "").strip(),
        model=params.get("model", "").strip(),
        runtime=params.get("runtime", "").strip(),
        tag=params.get("tag", "").strip(),
        options=params.get("options", "").strip(),
        since=parse_day(params.get("since", "").strip()),
        until=parse_day(params.get("until", "").strip(), end=True),
        ok=params.get("ok", "") if params.get("ok", "") in ("ok", "failed") else "",
    )


def model_ref(src: Source, text: str) -> queries.ModelRef:
    """`text` resolved against the model list reused for LISTS_TTL_S (its rows are then found
    through the store's sha256 index); `text` itself when the list does not know it (a model
    measured since, or nothing: found by a scan)."""
    return queries.resolve_model(queries.model_index(src.listed(queries.catalog)), text) or text


def resolved_filter(src: Source, params: Mapping[str, str]) -> MeasurementFilter:
    """The query string's filter with its model resolved; ValueError on a bad date."""
    flt = measurement_filter(params)
    if not flt.model:
        return flt
    ref = model_ref(src, flt.model)
    return replace(flt, model_key=ref if isinstance(ref, queries.ModelKey) else None)


PAGE_PARAMS = ("device", "model", "runtime", "tag", "options", "since", "until", "ok", "chart")
"""What the Measurements page's links carry over (never a `token`, nor anything else)."""


def page_number(text: str, pages: int) -> int:
    """The 0-based page asked for ('' is the first).

    Raises:
        ValueError: not a whole number from 0 to `pages - 1` (the page answers 400).
    """
    text = text.strip()
    if not text:
        return 0
    if not (text.isascii() and text.isdigit()) or len(text) > 18 or int(text) >= pages:
        raise ValueError(f"page={text[:40]!r}: expected a whole number from 0 to {pages - 1}")
    return int(text)


def measurements_page(src: Source, params: Mapping[str, str]) -> dict[str, Any]:
    """The filtered page of measurements; ValueError (400) on a bad date or page number."""
    flt = resolved_filter(src, params)
    total = queries.count_measurements(src.engine, src.tables, flt)
    pages = max(1, math.ceil(total / queries.PAGE_SIZE))
    page = page_number(params.get("page", ""), pages)
    rows = queries.measurement_page(src.engine, src.tables, flt, page)
    samples = queries.raw_samples(src.engine, src.tables, [r["id"] for r in rows if r.get("ok")])
    groups: dict[str, list[float]] = {}
    for row in rows:
        if samples.get(row["id"]):
            label = f"{row['model_name']} {(row['model_sha256'] or '')[:8]} @ {row['device_id']}"
            if label in groups or len(groups) < MAX_CHART_GROUPS:
                groups.setdefault(label, []).extend(samples[row["id"]])
    kind = "violin" if params.get("chart") == "violin" else "box"
    chart = (
        charts.distributions(
            groups,
            f"Latency from raw samples (this page's {len(rows)} runs)",
            kind=kind,
            div_id="latency-distributions",
        )
        if groups
        else ""
    )
    compare_models = (
        queries.models_on(src.listed(queries.catalog), flt.device) if flt.device else []
    )
    return {
        "filter": flt,
        "params": {k: params[k] for k in PAGE_PARAMS if params.get(k)},
        "total": total,
        "rows": rows,
        "page": page,
        "pages": pages,
        "chart": chart,
        "kind": kind,
        "choices": queries.filter_choices(src.listed(queries.catalog)),
        "has_tag": "tag" in src.tables.measurements.c,
        "export_query": flt.as_params(),
        "compare_models": compare_models,
    }


# -- compare -----------------------------------------------------------------------------------


def compare_page(src: Source, params: Mapping[str, str]) -> dict[str, Any]:
    """Two models on one device: their latest runs' samples side by side and the A/B verdict
    of `toolkit.stats.compare_rounds` (the same statistics as `edgeloop compare`)."""
    from toolkit.stats import compare_rounds
    from toolkit.stats.ab import MIN_ROUNDS

    device, a, b = (params.get(k, "").strip() for k in ("device", "a", "b"))
    context: dict[str, Any] = {
        "device": device,
        "a": a,
        "b": b,
        "chart": "",
        "result": None,
        "problem": "",
        "runs": [],
        "devices": queries.filter_choices(src.listed(queries.catalog))["device_id"],
        "models": queries.models_on(src.listed(queries.catalog), device) if device else [],
    }
    if not (device and a and b):
        return context
    a_runs = queries.latest_runs(
        src.engine, src.tables, device, model_ref(src, a), COMPARE_MAX_ROUNDS
    )
    b_runs = queries.latest_runs(
        src.engine, src.tables, device, model_ref(src, b), COMPARE_MAX_ROUNDS
    )
    rounds = min(len(a_runs), len(b_runs))
    a_runs, b_runs = a_runs[len(a_runs) - rounds :], b_runs[len(b_runs) - rounds :]
    name_a = a_runs[0].model_name if a_runs else a
    name_b = b_runs[0].model_name if b_runs else b
    if name_a == name_b:
        name_a, name_b = f"A: {name_a}", f"B: {name_b}"
    context.update(name_a=name_a, name_b=name_b, runs=list(zip(a_runs, b_runs)))
    if rounds:
        context["chart"] = charts.distributions(
            {
                name_a: [x for r in a_runs for x in r.samples_ms],
                name_b: [x for r in b_runs for x in r.samples_ms],
            },
            f"{name_a} vs {name_b} on {device} ({rounds} runs each)",
            kind="box",
            div_id="compare-distributions",
        )
    if rounds < MIN_ROUNDS:
        context["problem"] = (
            f"{device}: {len(a_runs)} runs of A and {len(b_runs)} of B with "
            f"raw samples; the A/B interval needs at least {MIN_ROUNDS} of "
            "each (run `edgeloop compare A B --device ...`)"
        )
        return context
    result = compare_rounds([r.samples_ms for r in a_runs], [r.samples_ms for r in b_runs])
    context["result"] = result
    context["verdict_line"] = result.describe(name_a, name_b)
    return context


# -- lineage -----------------------------------------------------------------------------------


def lineage_page(src: Source, params: Mapping[str, str]) -> dict[str, Any]:
    import json

    sha = params.get("sha", "").strip()
    context: dict[str, Any] = {"sha": sha, "has_lineage": src.tables.get("artifacts") is not None}
    if not sha:
        context["artifacts"] = [
            {**a, "summary": card_summary(json.loads(a["card_json"] or "{}"), a["format"] or "")}
            for a in queries.artifact_list(src.engine, src.tables)
        ]
        context["models"] = queries.top_models(src.listed(queries.catalog))
        return context
    node = queries.artifact(src.engine, src.tables, sha)
    chain = []
    seen = set()
    current = node
    while current is not None and current["sha256"] not in seen and len(chain) < 20:
        seen.add(current["sha256"])
        card = json.loads(current["card_json"] or "{}")
        chain.append(
            {
                **current,
                "recipe": json.loads(current["recipe_json"] or "null"),
                "card": card,
                "summary": card_summary(card, current.get("format") or ""),
            }
        )
        current = queries.parent_of(src.engine, src.tables, current)
    context.update(
        node=chain[0] if chain else None,
        chain=chain,
        children=queries.children_of(src.engine, src.tables, node) if node else [],
        measured=queries.model_by_device(
            src.engine, src.tables, node["sha256"] if node else model_ref(src, sha)
        ),
    )
    return context


def card_summary(card: Mapping[str, Any], fmt: str) -> dict[str, Any]:
    """The figures of a model card a person compares: file size (KB), MACs, parameters and
    accuracy (%; the artifact's own host accuracy when measured, else the model's)."""
    file = (card.get("artifacts") or {}).get(fmt) or {}
    size = file.get("size_bytes")
    return {
        "model": card.get("model", ""),
        "size_kb": size / 1024 if size else None,
        "macs": card.get("macs"),
        "parent_macs": card.get("parent_macs"),
        "parameters": card.get("parameters_total"),
        "accuracy_pct": file.get("host_accuracy_pct", card.get("accuracy_after_pct")),
    }


# -- tuning ------------------------------------------------------------------------------------


def tuning_list_page(src: Source) -> dict[str, Any]:
    return {
        "runs": queries.tune_run_list(src.engine, src.tables),
        "has_runs": src.tables.get("tune_runs") is not None,
    }


def tuning_data(src: Source, run_id: str) -> dict[str, Any]:
    """A run's trials, front, budget and trajectory: the page's context and the JSON its live
    refresh fetches."""
    import json

    from toolkit.search.pareto_front import pareto_front

    run = queries.tune_run(src.engine, src.tables, run_id)
    trials = queries.trial_records(src.engine, src.tables, run_id)
    budget = _latency_budget(run, trials)
    judged = [
        t
        for t in trials
        if t.get("status") == "ok"
        and t.get("accuracy_pct") is not None
        and (t.get("worst") or {}).get("latency_p90_ms") is not None
    ]
    points = [
        {
            "number": t["number"],
            "accuracy": t["accuracy_pct"],
            "latency": t["worst"]["latency_p90_ms"],
        }
        for t in judged
    ]
    front = pareto_front([(p["accuracy"], p["latency"]) for p in points], ("max", "min"))
    best, best_so_far = None, []
    for t in trials:
        value = (t.get("worst") or {}).get("latency_p90_ms")
        if t.get("feasible") and value is not None:
            best = value if best is None else min(best, value)
        best_so_far.append(best)
    figures = {
        "pareto": charts.pareto_figure(points, front, budget),
        "trajectory": charts.trajectory_figure(
            [t["number"] for t in trials],
            [(t.get("worst") or {}).get("latency_p90_ms") for t in trials],
            best_so_far,
            "worst p90 latency (ms)",
        ),
    }
    config = json.loads(run["config_json"]) if run and run.get("config_json") else {}
    return {
        "run_id": run_id,
        "run": run,
        "trials": trials,
        "budget": budget,
        "front_numbers": sorted(points[i]["number"] for i in front),
        "figures": figures,
        "config": config,
    }


def _latency_budget(run: Optional[dict[str, Any]], trials: list[dict[str, Any]]) -> Optional[float]:
    """The p90 budget in ms as the run resolved it (a trial's worst value over its usage),
    else the absolute budget asked in the run's configuration."""
    import json

    for t in trials:
        value = (t.get("worst") or {}).get("latency_p90_ms")
        usage = (t.get("usage") or {}).get("latency_p90_ms")
        if value and usage:
            return value / usage
    if run and run.get("config_json"):
        absolute = (json.loads(run["config_json"]).get("budgets") or {}).get("absolute") or {}
        if absolute.get("latency_p90_ms"):
            return float(absolute["latency_p90_ms"])
    return None


# -- gates -------------------------------------------------------------------------------------


def gates_page(src: Source, params: Mapping[str, str]) -> dict[str, Any]:
    fleet, device = params.get("fleet", "").strip(), params.get("device", "").strip()
    runs = queries.validation_list(src.engine, src.tables, fleet, device)
    rows = queries.gate_rows(src.engine, src.tables, [r["run_id"] for r in runs], device)
    by_run: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_run.setdefault(row["run_id"], []).append({**row, "message": _detail(row["detail"])})
    return {
        "fleet": fleet,
        "device": device,
        "runs": runs,
        "results": by_run,
        "choices": queries.gate_choices(src.engine, src.tables),
        "has_gates": src.tables.get("validation_runs") is not None,
    }


def _detail(text: Optional[str]) -> str:
    """A gate check's detail as a person reads it: its "message" when it is JSON with one."""
    import json

    try:
        raw = json.loads(text or "")
    except ValueError:
        return text or ""
    return str(raw.get("message", text)) if isinstance(raw, dict) else str(raw)


# -- history -----------------------------------------------------------------------------------


def history_page(src: Source, params: Mapping[str, str]) -> dict[str, Any]:
    from toolkit.stats import Verdict
    from toolkit.stats.ab import MIN_ROUNDS

    models = queries.top_models(src.listed(queries.catalog))
    model = params.get("model", "").strip() or (models[0][0] if models else "")
    by = "tag" if params.get("by") == "tag" else "day"
    metric = "p90_ms" if params.get("metric") == "p90" else "p50_ms"
    context: dict[str, Any] = {
        "model": model,
        "models": models,
        "by": by,
        "metric": metric,
        "chart": "",
        "points": [],
        "changes": [],
    }
    if not model:
        return context
    ref = model_ref(src, model)
    points = queries.history(src.engine, src.tables, ref, by)
    per_device: dict[str, list[queries.HistoryPoint]] = {}
    for p in points:
        per_device.setdefault(p.device_id, []).append(p)
    pairs = []
    for device, series in per_device.items():
        for before, after in list(zip(series, series[1:]))[-HISTORY_CHANGES_CHECKED:]:
            pairs.append((device, before.group, after.group))
    wanted = sorted({(d, g) for d, b, a in pairs for g in (b, a)})
    run_ids = queries.group_run_ids(src.engine, src.tables, ref, by, wanted, HISTORY_RUNS_PER_GROUP)
    changes = []
    flagged: dict[str, tuple[list[str], list[float]]] = {}
    values = {(p.device_id, p.group): getattr(p, metric) for p in points}
    for device, before, after in pairs:
        a_ids, b_ids = run_ids.get((device, before), ()), run_ids.get((device, after), ())
        k = min(len(a_ids), len(b_ids))
        change = {
            "device": device,
            "before": before,
            "after": after,
            "ratio": None,
            "verdict": "",
            "flagged": False,
            "ci": "",
        }
        if k < MIN_ROUNDS:
            change["verdict"] = (
                f"too few runs to judge ({len(a_ids)} and {len(b_ids)}; "
                f"{MIN_ROUNDS} needed in each)"
            )
        else:
            result = src.judged(
                a_ids[:k], b_ids[:k], lambda a=a_ids[:k], b=b_ids[:k]: _noise_test(src, a, b)
            )
            if result is None:
                change["verdict"] = "runs without raw samples: not judged"
                changes.append(change)
                continue
            change.update(
                ratio=result.ratio,
                verdict=result.verdict.value,
                ci=f"{result.ci_low:.3f}-{result.ci_high:.3f}",
                flagged=result.verdict is not Verdict.NO_DIFFERENCE,
            )
            if change["flagged"]:
                groups, ys = flagged.setdefault(device, ([], []))
                groups.append(after)
                ys.append(values.get((device, after)))
        changes.append(change)
    series = {
        d: ([p.group for p in s], [getattr(p, metric) for p in s]) for d, s in per_device.items()
    }
    label = "p90" if metric == "p90_ms" else "p50"
    context.update(
        points=points,
        changes=changes,
        chart=charts.history_lines(
            series, flagged, label, f"{model}: mean {label} per device per {by}"
        )
        if series
        else "",
    )
    return context


def _noise_test(src: Source, a_ids: tuple[int, ...], b_ids: tuple[int, ...]) -> Any:
    """`compare_rounds` of two groups' runs (each run a round), None when a run kept no
    samples."""
    from toolkit.stats import compare_rounds

    samples = queries.raw_samples(src.engine, src.tables, [*a_ids, *b_ids])
    a, b = [samples.get(i) for i in a_ids], [samples.get(i) for i in b_ids]
    if not all(a) or not all(b):
        return None
    return compare_rounds(a, b, resamples=HISTORY_RESAMPLES)


def now() -> str:
    return when(time.time())

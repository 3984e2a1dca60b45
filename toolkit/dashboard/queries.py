"""Every SQL statement the dashboard runs: SQLAlchemy Core, bound parameters only, aggregation
and pagination in the database.

The tables are `toolkit.db.schema`'s. Which of them the database holds is looked up once when
the app starts: a table an older store lacks (trials, artifacts, validation results) reads as
"nothing recorded yet", and a table whose columns differ from the schema (a store written
before a column was added, which a read-only reader cannot upgrade) is read as it is.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any, Optional, Union

from sqlalchemy import (
    Engine,
    MetaData,
    Table,
    and_,
    false,
    func,
    inspect,
    literal,
    or_,
    select,
)
from sqlalchemy.sql.elements import ColumnElement

PAGE_SIZE = 50
EXPORT_COLUMNS = (
    "id",
    "run_id",
    "timestamp",
    "device_id",
    "device_hostname",
    "device_arch",
    "model_name",
    "model_sha256",
    "runtime",
    "runtime_version",
    "threads",
    "accelerator",
    "ok",
    "error_kind",
    "n",
    "mean_ms",
    "std_ms",
    "cv",
    "min_ms",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "load_ms",
    "first_inference_ms",
    "peak_rss_mb",
    "model_size_bytes",
    "energy_mj",
    "power_sensor",
    "warnings",
    "options_json",
    "tag",
)
"""Columns of the measurements table and of its CSV/Parquet export (those the store has)."""
LIST_COLUMNS = (
    "id",
    "timestamp",
    "device_id",
    "model_name",
    "model_sha256",
    "runtime",
    "runtime_version",
    "threads",
    "n",
    "p50_ms",
    "p90_ms",
    "cv",
    "peak_rss_mb",
    "energy_mj",
    "ok",
    "error_kind",
    "warnings",
    "tag",
)
"""Columns of the Measurements page's table."""


class Tables:
    """The schema's tables the database holds: `tables.get("trials")` is None when absent."""

    def __init__(self, engine: Engine) -> None:
        from toolkit.db import schema

        found = inspect(engine)
        present = set(found.get_table_names())
        self._tables: dict[str, Table] = {}
        reflected = MetaData()
        for name, table in schema.metadata.tables.items():
            if name not in present:
                continue
            have = {c["name"] for c in found.get_columns(name)}
            if {c.name for c in table.columns} <= have:
                self._tables[name] = table
            else:  # an older layout: read the columns it has
                self._tables[name] = Table(name, reflected, autoload_with=engine)

    def get(self, name: str) -> Optional[Table]:
        return self._tables.get(name)

    @property
    def measurements(self) -> Table:
        table = self.get("measurements")
        if table is None:
            raise LookupError("no measurements table in this database")
        return table


def _columns(table: Table, names: Sequence[str]) -> list[Any]:
    return [table.c[name] for name in names if name in table.c]


@dataclass(frozen=True)
class MeasurementFilter:
    """What the Measurements page (and its export) shows. Empty fields do not filter.

    Attributes:
        device: device id or hostname, exact.
        model: model name (exact) or sha256 prefix.
        runtime: runtime name, exact.
        since, until: Unix seconds, inclusive.
        tag: the label stored with the measurement (`--tag`), exact.
        options: the benchmark options as asked (`BenchmarkOptions.key()`), exact.
        ok: "ok" only successful runs, "failed" only failures, "" both.
    """

    device: str = ""
    model: str = ""
    runtime: str = ""
    since: Optional[float] = None
    until: Optional[float] = None
    tag: str = ""
    options: str = ""
    ok: str = ""
    model_key: Optional[ModelKey] = None  # `model` resolved (`resolve_model`)

    def conditions(self, t: Table) -> list[ColumnElement]:
        where: list[ColumnElement] = []
        if self.device:
            where.append(or_(t.c.device_id == self.device, t.c.device_hostname == self.device))
        if self.model:
            where.append(model_matches(t, self.model_key or self.model))
        if self.runtime:
            where.append(t.c.runtime == self.runtime)
        if self.since is not None:
            where.append(t.c.timestamp >= self.since)
        if self.until is not None:
            where.append(t.c.timestamp <= self.until)
        if self.tag and "tag" in t.c:
            where.append(t.c.tag == self.tag)
        if self.options:
            where.append(t.c.options_json == self.options)
        if self.ok == "ok":
            where.append(t.c.ok == 1)
        elif self.ok == "failed":
            where.append(t.c.ok == 0)
        return where

    def as_params(self) -> dict[str, str]:
        """The filter as query-string parameters (for links and the export)."""
        out = {}
        for f in fields(self):
            if f.name == "model_key":
                continue
            value = getattr(self, f.name)
            if value not in (None, ""):
                out[f.name] = str(value)
        return out


SHA256_HEX = 64


@dataclass(frozen=True)
class ModelKey:
    """A model resolved against the model list: the sha256s to look up through the store's
    (model_sha256, device_id) index, and the name the rows must carry (None: any name, for
    a sha256 prefix)."""

    shas: tuple[str, ...]
    name: Optional[str] = None


ModelRef = Union[str, ModelKey]
"""A model as the user named it (a name or a sha256 prefix: a scan), or resolved."""


def model_matches(t: Table, model: ModelRef) -> ColumnElement:
    """Rows of `model`: a ModelKey (index lookups), a whole sha256 (the same), else an exact
    name or a sha256 prefix (LIKE with the value escaped; a scan)."""
    if isinstance(model, ModelKey):
        if not model.shas:
            return false()
        found = t.c.model_sha256.in_(list(model.shas))
        return found if model.name is None else and_(found, t.c.model_name == model.name)
    if len(model) == SHA256_HEX and all(c in "0123456789abcdef" for c in model):
        return t.c.model_sha256 == model
    return or_(t.c.model_name == model, t.c.model_sha256.startswith(model, autoescape=True))


def resolve_model(index: dict[str, tuple[str, ...]], text: str) -> Optional[ModelKey]:
    """`text` as `index` knows it: a model name (its sha256s, that name), or a sha256 prefix
    (every sha256 starting with it); None when it knows neither."""
    if text in index:
        return ModelKey(index[text], text)
    lowered = text.lower()
    shas = {sha for shas in index.values() for sha in shas if lowered and sha.startswith(lowered)}
    return ModelKey(tuple(sorted(shas))) if shas else None


def _where(stmt: Any, conditions: list[ColumnElement]) -> Any:
    return stmt.where(and_(*conditions)) if conditions else stmt


# -- the catalog: what exists, from one scan ----------------------------------------------------


@dataclass(frozen=True)
class CatalogRow:
    """One combination of device, model, runtime, options and tag that the store holds, with
    its counts: the lists every page offers are folded from these (`catalog()`)."""

    device_id: str
    hostname: str
    arch: str
    model_name: str
    model_sha256: str
    runtime: str
    runtime_version: str
    options_json: str
    tag: str
    runs: int
    ok_runs: int
    last_timestamp: Optional[float]
    last_id: int


def catalog(engine: Engine, tables: Tables) -> tuple[CatalogRow, ...]:
    """Every (device, model, runtime, options, tag) combination with its run counts and latest
    row: one GROUP BY over the measurements table (a scan; the app reuses it, see
    `views.Source.listed`)."""
    t = tables.measurements
    tag = t.c.tag if "tag" in t.c else literal(None).label("tag")
    keys = [
        t.c.device_id,
        t.c.model_name,
        t.c.model_sha256,
        t.c.runtime,
        t.c.runtime_version,
        t.c.options_json,
        tag,
    ]
    stmt = select(
        *keys,
        func.max(t.c.device_hostname),
        func.max(t.c.device_arch),
        func.count(),
        func.sum(t.c.ok),
        func.max(t.c.timestamp),
        func.max(t.c.id),
    ).group_by(*keys)
    with engine.connect() as db:
        return tuple(
            CatalogRow(
                device_id=d or "",
                model_name=m or "",
                model_sha256=sha or "",
                runtime=r or "",
                runtime_version=v or "",
                options_json=o or "",
                tag=g or "",
                hostname=h or "",
                arch=a or "",
                runs=int(n),
                ok_runs=int(ok or 0),
                last_timestamp=ts,
                last_id=int(last),
            )
            for d, m, sha, r, v, o, g, h, a, n, ok, ts, last in db.execute(stmt)
        )


def filter_choices(cat: Sequence[CatalogRow]) -> dict[str, list[str]]:
    """Distinct devices, models, runtimes, options and tags, for the filter drop-downs."""
    names = ("device_id", "model_name", "runtime", "options_json", "tag")
    return {n: sorted({getattr(r, n) for r in cat if getattr(r, n)}) for n in names}


def model_index(cat: Sequence[CatalogRow]) -> dict[str, tuple[str, ...]]:
    """Every model name with the sha256s measured under it."""
    out: dict[str, set[str]] = {}
    for r in cat:
        out.setdefault(r.model_name, set()).add(r.model_sha256)
    return {name: tuple(sorted(shas)) for name, shas in out.items()}


@dataclass(frozen=True)
class SeenDevice:
    """A device as the results database knows it."""

    device_id: str
    hostname: str
    arch: str
    measurements: int
    failures: int
    last_timestamp: Optional[float]
    runtimes: tuple[str, ...]
    last_model: str = ""


def seen_devices(cat: Sequence[CatalogRow]) -> list[SeenDevice]:
    """Every device with at least one measurement: counts, runtimes seen, the latest model."""
    by_device: dict[str, list[CatalogRow]] = {}
    for r in cat:
        by_device.setdefault(r.device_id, []).append(r)
    out = []
    for device, rows in sorted(by_device.items()):
        latest = max(rows, key=lambda r: r.last_id)
        stamps = [r.last_timestamp for r in rows if r.last_timestamp is not None]
        out.append(
            SeenDevice(
                device_id=device,
                hostname=max(r.hostname for r in rows),
                arch=max(r.arch for r in rows),
                measurements=sum(r.runs for r in rows),
                failures=sum(r.runs - r.ok_runs for r in rows),
                last_timestamp=max(stamps) if stamps else None,
                runtimes=tuple(
                    sorted({f"{r.runtime} {r.runtime_version}".strip() for r in rows if r.runtime})
                ),
                last_model=latest.model_name,
            )
        )
    return out


def models_on(cat: Sequence[CatalogRow], device: str) -> list[tuple[str, str, int]]:
    """(model name, sha256, successful runs) of every model measured on `device` (its id or
    hostname)."""
    runs: dict[tuple[str, str], int] = {}
    for r in cat:
        if device in (r.device_id, r.hostname) and r.ok_runs:
            key = (r.model_name, r.model_sha256)
            runs[key] = runs.get(key, 0) + r.ok_runs
    return [(name, sha, n) for (name, sha), n in sorted(runs.items())]


def top_models(cat: Sequence[CatalogRow], limit: int = 50) -> list[tuple[str, int]]:
    """Model names by successful runs, most measured first."""
    runs: dict[str, int] = {}
    for r in cat:
        if r.ok_runs and r.model_name:
            runs[r.model_name] = runs.get(r.model_name, 0) + r.ok_runs
    return sorted(runs.items(), key=lambda item: (-item[1], item[0]))[:limit]


# -- measurements ------------------------------------------------------------------------------


def count_measurements(engine: Engine, tables: Tables, flt: MeasurementFilter) -> int:
    t = tables.measurements
    with engine.connect() as db:
        return int(
            db.execute(_where(select(func.count()).select_from(t), flt.conditions(t))).scalar_one()
        )


def measurement_page(
    engine: Engine, tables: Tables, flt: MeasurementFilter, page: int = 0, per_page: int = PAGE_SIZE
) -> list[dict[str, Any]]:
    """One page of the filtered measurements, newest first."""
    t = tables.measurements
    stmt = _where(select(*_columns(t, LIST_COLUMNS)), flt.conditions(t))
    stmt = stmt.order_by(t.c.id.desc()).limit(per_page).offset(max(0, page) * per_page)
    with engine.connect() as db:
        return [dict(row._mapping) for row in db.execute(stmt)]


def raw_samples(engine: Engine, tables: Tables, ids: Sequence[int]) -> dict[int, list[float]]:
    """The raw latency samples (ms) kept in each row's record, by row id (empty when none)."""
    if not ids:
        return {}
    t = tables.measurements
    with engine.connect() as db:
        rows = db.execute(select(t.c.id, t.c.record_json).where(t.c.id.in_(list(ids))))
        return {int(i): _samples(text) for i, text in rows}


def _samples(record_json: Optional[str]) -> list[float]:
    if not record_json:
        return []
    latency = json.loads(record_json).get("latency") or {}
    return [float(x) for x in latency.get("samples_ms") or ()]


def export_rows(
    engine: Engine, tables: Tables, flt: MeasurementFilter
) -> tuple[list[str], Iterator[tuple]]:
    """Every filtered row (oldest first) with the export columns the store has."""
    t = tables.measurements
    columns = _columns(t, EXPORT_COLUMNS)
    stmt = _where(select(*columns), flt.conditions(t)).order_by(t.c.id)

    def rows() -> Iterator[tuple]:
        with engine.connect() as db:
            yield from (tuple(r) for r in db.execution_options(yield_per=2000).execute(stmt))

    return [c.name for c in columns], rows()


# -- devices -----------------------------------------------------------------------------------


# -- compare -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One stored benchmark of a model: its row, when, and its raw samples (ms)."""

    id: int
    timestamp: float
    model_name: str
    model_sha256: str
    samples_ms: tuple[float, ...]


def latest_runs(
    engine: Engine, tables: Tables, device: str, model: ModelRef, limit: int = 10
) -> list[Run]:
    """The latest successful runs of `model` on `device` that kept raw samples, oldest first."""
    t = tables.measurements
    stmt = (
        select(t.c.id, t.c.timestamp, t.c.model_name, t.c.model_sha256, t.c.record_json)
        .where(
            or_(t.c.device_id == device, t.c.device_hostname == device),
            model_matches(t, model),
            t.c.ok == 1,
        )
        .order_by(t.c.id.desc())
        .limit(limit)
    )
    with engine.connect() as db:
        rows = db.execute(stmt).all()
    runs = [
        Run(int(i), float(ts or 0), name or "", sha or "", tuple(_samples(record)))
        for i, ts, name, sha, record in rows
    ]
    return [r for r in reversed(runs) if r.samples_ms]


# -- history -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryPoint:
    """A model's figures on one device in one group (a day or a tag): means over its runs."""

    device_id: str
    group: str
    runs: int
    p50_ms: Optional[float]
    p90_ms: Optional[float]
    first_timestamp: float


def day_of(engine: Engine, t: Table) -> ColumnElement:
    """The UTC calendar day of a row's timestamp, as 'YYYY-MM-DD', in the database's dialect."""
    if engine.dialect.name == "sqlite":
        return func.date(t.c.timestamp, literal("unixepoch"))
    return func.to_char(func.to_timestamp(t.c.timestamp), literal("YYYY-MM-DD"))


def history(engine: Engine, tables: Tables, model: ModelRef, by: str = "day") -> list[HistoryPoint]:
    """p50/p90 of `model` per device per day (or per tag), oldest group first."""
    t = tables.measurements
    key = t.c.tag if by == "tag" and "tag" in t.c else day_of(engine, t)
    stmt = (
        select(
            t.c.device_id,
            key.label("grp"),
            func.count(),
            func.avg(t.c.p50_ms),
            func.avg(t.c.p90_ms),
            func.min(t.c.timestamp).label("first"),
        )
        .where(model_matches(t, model), t.c.ok == 1, key.is_not(None))
        .group_by(t.c.device_id, key)
        .order_by(t.c.device_id, "first")
    )
    with engine.connect() as db:
        return [
            HistoryPoint(d, str(g), int(n), p50, p90, float(first))
            for d, g, n, p50, p90, first in db.execute(stmt)
        ]


def group_run_ids(
    engine: Engine,
    tables: Tables,
    model: ModelRef,
    by: str,
    wanted: Sequence[tuple[str, str]],
    per_group: int = 3,
) -> dict[tuple[str, str], tuple[int, ...]]:
    """For each (device, group) in `wanted`: the row ids of its latest `per_group` successful
    runs, newest first (one row-number window in SQL over ids only; the records are read
    apart, `raw_samples`, for the rows that need them)."""
    if not wanted:
        return {}
    t = tables.measurements
    key = t.c.tag if by == "tag" and "tag" in t.c else day_of(engine, t)
    ranked = (
        select(
            t.c.id,
            t.c.device_id,
            key.label("grp"),
            func.row_number()
            .over(partition_by=(t.c.device_id, key), order_by=t.c.id.desc())
            .label("rank"),
        )
        .where(
            model_matches(t, model), t.c.ok == 1, t.c.device_id.in_(sorted({d for d, _ in wanted}))
        )
        .subquery()
    )
    stmt = (
        select(ranked.c.id, ranked.c.device_id, ranked.c.grp)
        .where(ranked.c.rank <= per_group, ranked.c.grp.in_(sorted({g for _, g in wanted})))
        .order_by(ranked.c.id.desc())
    )
    want = set(wanted)
    out: dict[tuple[str, str], list[int]] = {}
    with engine.connect() as db:
        for row_id, device, group in db.execute(stmt):
            if (device, str(group)) in want:
                out.setdefault((device, str(group)), []).append(int(row_id))
    return {k: tuple(v) for k, v in out.items()}


# -- lineage -----------------------------------------------------------------------------------


def artifact_list(engine: Engine, tables: Tables, limit: int = 100) -> list[dict[str, Any]]:
    """The latest artifacts recorded (newest first); empty when the store has no lineage."""
    a = tables.get("artifacts")
    if a is None:
        return []
    stmt = (
        select(
            a.c.sha256,
            a.c.parent_sha256,
            a.c.format,
            a.c.created,
            a.c.run_id,
            a.c.tag,
            a.c.card_json,
        )
        .order_by(a.c.created.desc())
        .limit(limit)
    )
    with engine.connect() as db:
        return [dict(r._mapping) for r in db.execute(stmt)]


def artifact(engine: Engine, tables: Tables, sha: str) -> Optional[dict[str, Any]]:
    """The artifact whose sha256 starts with `sha` (the newest when several do)."""
    a = tables.get("artifacts")
    if a is None or not sha:
        return None
    stmt = (
        select(a)
        .where(a.c.sha256.startswith(sha, autoescape=True))
        .order_by(a.c.created.desc())
        .limit(1)
    )
    with engine.connect() as db:
        row = db.execute(stmt).first()
    return dict(row._mapping) if row else None


def parent_of(engine: Engine, tables: Tables, child: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The artifact (same format first) built from the model `child` was compressed from:
    its `model_sha256` is the child's `parent_sha256`. None for a root (an export of the
    model itself, whose parent state is its own) or an unrecorded parent."""
    a = tables.get("artifacts")
    parent = child.get("parent_sha256")
    if a is None or not parent or parent == child.get("model_sha256"):
        return None
    same_format = (a.c.format == child.get("format")).desc()
    stmt = (
        select(a)
        .where(a.c.model_sha256 == parent, a.c.sha256 != child["sha256"])
        .order_by(same_format, a.c.created)
        .limit(1)
    )
    with engine.connect() as db:
        row = db.execute(stmt).first()
    return dict(row._mapping) if row else None


def children_of(engine: Engine, tables: Tables, node: dict[str, Any]) -> list[dict[str, Any]]:
    """Artifacts compressed from this artifact's model (not its own other formats)."""
    a = tables.get("artifacts")
    model = node.get("model_sha256")
    if a is None or not model:
        return []
    stmt = (
        select(a.c.sha256, a.c.format, a.c.created, a.c.recipe_json)
        .where(a.c.parent_sha256 == model, a.c.model_sha256 != model)
        .order_by(a.c.created)
        .limit(100)
    )
    with engine.connect() as db:
        return [dict(r._mapping) for r in db.execute(stmt)]


def model_by_device(engine: Engine, tables: Tables, model: ModelRef) -> list[dict[str, Any]]:
    """Every device that measured `model` (name or sha256 prefix): runs, mean p50/p90, memory,
    energy, last time."""
    t = tables.measurements
    stmt = (
        select(
            t.c.device_id,
            t.c.runtime,
            func.count().label("runs"),
            func.avg(t.c.p50_ms).label("p50_ms"),
            func.avg(t.c.p90_ms).label("p90_ms"),
            func.avg(t.c.peak_rss_mb).label("peak_rss_mb"),
            func.avg(t.c.energy_mj).label("energy_mj"),
            func.max(t.c.timestamp).label("last"),
        )
        .where(model_matches(t, model), t.c.ok == 1)
        .group_by(t.c.device_id, t.c.runtime)
        .order_by(t.c.device_id)
    )
    with engine.connect() as db:
        return [dict(r._mapping) for r in db.execute(stmt)]


# -- tuning runs -------------------------------------------------------------------------------


def tune_run_list(engine: Engine, tables: Tables, limit: int = 100) -> list[dict[str, Any]]:
    """Tuning runs, newest first, with their trial counts."""
    runs, trials = tables.get("tune_runs"), tables.get("trials")
    if runs is None:
        return []
    columns = [
        runs.c.run_id,
        runs.c.created,
        runs.c.host,
        runs.c.tag,
        runs.c.model,
        runs.c.strategy,
    ]
    stmt = select(*columns)
    if trials is not None:
        counts = (
            select(trials.c.run_id, func.count().label("trials"))
            .group_by(trials.c.run_id)
            .subquery()
        )
        stmt = select(*columns, counts.c.trials).join_from(
            runs, counts, runs.c.run_id == counts.c.run_id, isouter=True
        )
    stmt = stmt.order_by(runs.c.created.desc()).limit(limit)
    with engine.connect() as db:
        return [dict(r._mapping) for r in db.execute(stmt)]


def tune_run(engine: Engine, tables: Tables, run_id: str) -> Optional[dict[str, Any]]:
    runs = tables.get("tune_runs")
    if runs is None:
        return None
    with engine.connect() as db:
        row = db.execute(select(runs).where(runs.c.run_id == run_id)).first()
    return dict(row._mapping) if row else None


def trial_records(engine: Engine, tables: Tables, run_id: str) -> list[dict[str, Any]]:
    """The run's trials as stored (`Trial.to_json()`), in trial-number order."""
    trials = tables.get("trials")
    if trials is None:
        return []
    stmt = select(trials.c.json).where(trials.c.run_id == run_id).order_by(trials.c.number)
    with engine.connect() as db:
        return [json.loads(text) for text in db.execute(stmt).scalars()]


# -- validation gates --------------------------------------------------------------------------


def validation_list(
    engine: Engine, tables: Tables, fleet: str = "", device: str = "", limit: int = 50
) -> list[dict[str, Any]]:
    """Validation runs, newest first; `device` keeps the runs that validated that device."""
    runs = tables.get("validation_runs")
    if runs is None:
        return []
    stmt = select(runs)
    if fleet:
        stmt = stmt.where(runs.c.fleet == fleet)
    results = tables.get("gate_results")
    if device and results is not None:
        stmt = stmt.where(
            runs.c.run_id.in_(select(results.c.run_id).where(results.c.device == device))
        )
    stmt = stmt.order_by(runs.c.started.desc()).limit(limit)
    with engine.connect() as db:
        return [dict(r._mapping) for r in db.execute(stmt)]


def gate_rows(
    engine: Engine, tables: Tables, run_ids: Sequence[str], device: str = ""
) -> list[dict[str, Any]]:
    """Per device and check results of these validation runs."""
    results = tables.get("gate_results")
    if results is None or not run_ids:
        return []
    stmt = select(results).where(results.c.run_id.in_(list(run_ids)))
    if device:
        stmt = stmt.where(results.c.device == device)
    stmt = stmt.order_by(results.c.run_id, results.c.device, results.c.id)
    with engine.connect() as db:
        return [dict(r._mapping) for r in db.execute(stmt)]


def gate_file(engine: Engine, tables: Tables, run_id: str, kind: str) -> Optional[str]:
    """The JUnit (`kind` "junit") or HTML ("html") file a validation run recorded."""
    runs = tables.get("validation_runs")
    if runs is None or kind not in ("junit", "html"):
        return None
    column = runs.c.junit_path if kind == "junit" else runs.c.html_path
    with engine.connect() as db:
        return db.execute(select(column).where(runs.c.run_id == run_id)).scalar_one_or_none()


def gate_choices(engine: Engine, tables: Tables) -> dict[str, list[str]]:
    runs, results = tables.get("validation_runs"), tables.get("gate_results")
    out: dict[str, list[str]] = {"fleet": [], "device": []}
    with engine.connect() as db:
        if runs is not None:
            out["fleet"] = [
                str(v)
                for v in db.execute(
                    select(runs.c.fleet)
                    .where(runs.c.fleet.is_not(None))
                    .distinct()
                    .order_by(runs.c.fleet)
                ).scalars()
            ]
        if results is not None:
            out["device"] = [
                str(v)
                for v in db.execute(
                    select(results.c.device).distinct().order_by(results.c.device)
                ).scalars()
            ]
    return out

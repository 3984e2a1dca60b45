"""Every table of the results database, as SQLAlchemy Core `Table`s on one `MetaData`.

Readers (the dashboard, `edgeloop results`, pandas) select through these objects; writers are
`toolkit.results.store.ResultsStore`, `toolkit.tune.trialdb.TrialDB`, `toolkit.db.lineage` and
`toolkit.db.validation`. Times are UNIX seconds (float) unless a name says otherwise; `*_json`
columns hold JSON text; `tag` is the user's label for a row (`edgeloop --tag LABEL ...`, e.g. a
git sha).

The flat measurement columns are generated from `toolkit.measurement.COLUMNS` (the one owner of
what a measurement is): a field added there becomes a column when a database is opened
(`toolkit.db.upgrade`), without a revision of its own. Everything else changes by an Alembic
revision under `migrations/versions/`.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
)
from sqlalchemy.types import TypeEngine

from toolkit.measurement import COLUMNS

SCHEMA_VERSION = 5
"""The schema this code writes: Alembic revision `f"v{SCHEMA_VERSION}"` (see `revision_id`).
v2 is the sqlite3-era results store (measurements only); v3 adds `tag`, the trial store keyed by
run id, lineage and validation gate results; v4 covering indexes for the catalog of what was
measured and for a model's history, and one by tag; v5 `real_inputs` and `inputs_sha256`
on measurements (profile --inputs). On SQLite it is mirrored into
`PRAGMA user_version`, which the sqlite3-era code checks, so that code refuses a database it
cannot write correctly."""


def revision_id(version: int) -> str:
    """The Alembic revision id of schema `version` (`"v3"`)."""
    return f"v{version}"


ID = BigInteger().with_variant(Integer(), "sqlite")  # SQLite's rowid alias must be INTEGER
"""Row ids: 64-bit on PostgreSQL, `INTEGER PRIMARY KEY` (the rowid) on SQLite."""

_FLAT_TYPES: dict[str, TypeEngine] = {
    "INTEGER": BigInteger().with_variant(Integer(), "sqlite"),
    "REAL": Float(precision=53),  # double precision on PostgreSQL (REAL there is 4 bytes)
    "TEXT": Text(),
}

FIXED: dict[str, TypeEngine] = {  # measurement columns that are not measurement fields
    "run_id": Text(),  # groups rows (a tuning run, a validation, a profile)
    "options_json": Text(),  # the options as asked, `BenchmarkOptions.key()`: the cache key
    "record_json": Text(),  # the whole Measurement, raw samples included (`to_json()`)
    "extra_json": Text(),  # what the caller added (device profile, trial, ...)
    "tag": Text(),  # the user's label (v3)
}

metadata = MetaData()


def flat_type(sql_type: str) -> TypeEngine:
    """The column type of a measurement field whose SQLite type is `sql_type`."""
    return _FLAT_TYPES[sql_type]


CATALOG_COLUMNS = (
    "device_id",
    "model_name",
    "model_sha256",
    "runtime",
    "runtime_version",
    "options_json",
    "tag",
    "device_hostname",
    "device_arch",
    "ok",
    "timestamp",
)
"""What the catalog of measured combinations groups by and aggregates (dashboard lists): one
covering index holds them all, so the catalog never reads a row's raw samples."""
HISTORY_COLUMNS = (
    "model_sha256",
    "model_name",
    "device_id",
    "ok",
    "tag",
    "timestamp",
    "p50_ms",
    "p90_ms",
)
"""What a model's history over days or tags reads (dashboard History): covered by one index."""

measurements = Table(
    "measurements",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    *(Column(name, kind) for name, kind in FIXED.items()),
    *(Column(c.name, flat_type(c.sql_type)) for c in COLUMNS),
    Index("by_model", "model_sha256", "device_id"),
    Index("by_run", "run_id"),
    Index("catalog", *CATALOG_COLUMNS),
    Index("history", *HISTORY_COLUMNS),
    Index("by_tag", "tag"),
    sqlite_autoincrement=True,
)
"""One row per measurement: provenance, every statistic, the whole record as JSON. Booleans
are 0/1 integers (the sqlite3-era layout)."""

tune_runs = Table(
    "tune_runs",
    metadata,
    Column("run_id", Text, primary_key=True),
    Column("created", Float(precision=53), nullable=False),
    Column("host", Text),  # the host that started it
    Column("tag", Text),
    Column("model", Text),
    Column("strategy", Text),
    Column("config_json", Text),  # run.json: `--resume RUN_ID` on another host starts from it
)

trials = Table(
    "trials",
    metadata,
    Column("run_id", Text, nullable=False),
    Column("key", Text, nullable=False),  # the candidate's key
    Column("number", Integer, nullable=False),
    Column("json", Text, nullable=False),  # `Trial.to_json()`
    PrimaryKeyConstraint("run_id", "key"),
)

trial_measurements = Table(
    "trial_measurements",
    metadata,
    Column("run_id", Text, nullable=False),
    Column("device_id", Text, nullable=False),
    Column("sha256", Text, nullable=False),
    Column("options", Text, nullable=False),  # `BenchmarkOptions.key()`
    Column("json", Text, nullable=False),  # `Measurement.to_json()`
    PrimaryKeyConstraint("run_id", "device_id", "sha256", "options"),
)
"""A run's own measurement cache (the `measurements` table is the cross-run one)."""

builds = Table(
    "builds",
    metadata,
    Column("run_id", Text, nullable=False),
    Column("recipe_key", Text, nullable=False),
    Column("json", Text, nullable=False),  # `toolkit.tune.build.Build` as a dict
    PrimaryKeyConstraint("run_id", "recipe_key"),
)

accuracy = Table(
    "accuracy",
    metadata,
    Column("run_id", Text, nullable=False),
    Column("sha256", Text, nullable=False),
    Column("evaluated_on", Text, nullable=False),
    Column("json", Text, nullable=False),
    PrimaryKeyConstraint("run_id", "sha256", "evaluated_on"),
)

artifacts = Table(
    "artifacts",
    metadata,
    Column("sha256", Text, primary_key=True),  # of the artifact file's bytes
    Column("parent_sha256", Text),  # state sha256 of the model it was compressed from
    Column("model_sha256", Text),  # state sha256 of the compressed model (a child's parent)
    Column("format", Text),  # tflite, onnx, pt2, ...
    Column("recipe_json", Text),
    Column("card_json", Text),  # `ModelCard.to_json()`
    Column("created", Float(precision=53), nullable=False),
    Column("run_id", Text),  # the tuning run that built it, when one did
    Column("tag", Text),
    Index("artifacts_by_parent", "parent_sha256"),
    Index("artifacts_by_model", "model_sha256"),
)
"""Lineage: artifact sha → recipe → parent; `measurements.model_sha256` joins on `sha256`."""

validation_runs = Table(
    "validation_runs",
    metadata,
    Column("run_id", Text, primary_key=True),
    Column("started", Float(precision=53), nullable=False),
    Column("fleet", Text),
    Column("artifact", Text),  # the file validated
    Column("artifact_sha256", Text),
    Column("passed", Boolean, nullable=False),
    Column("devices", Integer, nullable=False),
    Column("failed_devices", Integer, nullable=False),
    Column("junit_path", Text),
    Column("html_path", Text),
    Column("tag", Text),
)

gate_results = Table(
    "gate_results",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("run_id", Text, nullable=False),  # validation_runs.run_id
    Column("fleet", Text),
    Column("device", Text, nullable=False),
    Column("check", Text, nullable=False),  # a reserved word in SQL: quote it in raw SQL
    Column("passed", Boolean, nullable=False),
    Column("detail", Text),  # JSON: {"message", and measured/limit/unit/... when known}
    Column("junit_path", Text),
    Column("html_path", Text),
    Column("started", Float(precision=53), nullable=False),
    Index("gate_results_by_run", "run_id"),
    sqlite_autoincrement=True,
)
"""One row per device and check of a validation (budget, parity, accuracy, regression...)."""

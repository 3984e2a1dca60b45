"""v2: the sqlite3-era results store, as edgeloop 0.x wrote it (measurements only).

A results.db from before Alembic (PRAGMA user_version 1 or 2, no alembic_version table) is
brought here: the table is kept with its rows and gains the v2 columns it lacks, as the
sqlite3-era code did on open. An empty database gets the table.

The columns are frozen here as they were at v2; later measurement fields are added by
`toolkit.db.upgrade` from `toolkit.measurement.COLUMNS`.

Revision ID: v2
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "v2"
down_revision = None
branch_labels = None
depends_on = None

_INT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_REAL = sa.Float(precision=53)
_TEXT = sa.Text()
_TYPES = {"I": _INT, "R": _REAL, "T": _TEXT}
FIXED = [("run_id", "T"), ("options_json", "T"), ("record_json", "T"), ("extra_json", "T")]
FLAT = [  # (name, I/R/T) as of v2, in order
    ("ok", "I"), ("error_kind", "T"), ("error_message", "T"), ("wall_s", "R"),
    ("warnings", "T"), ("host_round_trip_p50_ms", "R"), ("device_id", "T"),
    ("device_hostname", "T"), ("device_arch", "T"), ("model_sha256", "T"), ("model_name", "T"),
    ("runtime", "T"), ("runtime_version", "T"), ("threads", "I"), ("accelerator", "T"),
    ("timestamp", "R"), ("toolkit_version", "T"), ("agent_version", "T"),
    ("protocol_version", "I"), ("os", "T"), ("kernel", "T"), ("cpu_model", "T"),
    ("python_version", "T"), ("governor", "T"), ("cpu_freq_mhz", "R"), ("affinity", "T"),
    ("n", "I"), ("mean_ms", "R"), ("std_ms", "R"), ("cv", "R"), ("min_ms", "R"),
    ("p50_ms", "R"), ("p90_ms", "R"), ("p95_ms", "R"), ("p99_ms", "R"), ("max_ms", "R"),
    ("load_ms", "R"), ("first_inference_ms", "R"), ("timed_window_s", "R"),
    ("peak_rss_mb", "R"), ("baseline_rss_mb", "R"), ("model_size_bytes", "I"),
    ("tflm_arena_bytes", "I"), ("power_sensor", "T"), ("power_rate_hz", "R"),
    ("power_samples", "I"), ("mean_w", "R"), ("idle_w", "R"), ("energy_mj", "R"),
    ("power_method", "T"), ("cpu_freq_mhz_before", "R"), ("cpu_freq_mhz_after", "R"),
    ("temperature_c_before", "R"), ("temperature_c_after", "R"), ("throttled", "I"),
    ("temperature_rise_c", "R"), ("temperature_rose", "I"), ("cooldown_waited_s", "R"),
]  # fmt: skip
INDEXES = {"by_model": ["model_sha256", "device_id"], "by_run": ["run_id"]}


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    wanted = [(name, _TYPES[kind]) for name, kind in FIXED + FLAT]
    if "measurements" in inspector.get_table_names():  # a sqlite3-era results.db
        have = {c["name"] for c in inspector.get_columns("measurements")}
        for name, kind in wanted:
            if name not in have:
                op.add_column("measurements", sa.Column(name, kind))
        indexed = {i["name"] for i in inspector.get_indexes("measurements")}
    else:
        op.create_table(
            "measurements",
            sa.Column("id", _INT, primary_key=True, autoincrement=True),
            *(sa.Column(name, kind) for name, kind in wanted),
            sqlite_autoincrement=True,
        )
        indexed = set()
    for name, columns in INDEXES.items():
        if name not in indexed:
            op.create_index(name, "measurements", columns)


def downgrade() -> None:
    op.drop_table("measurements")

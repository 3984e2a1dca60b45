"""v4: covering indexes for the catalog of what was measured (device, model, runtime,
options, tag and the aggregates the dashboard's lists read) and for a model's history (p50/p90
by device over days or tags), so that both read an index alone instead of rows that carry their
raw samples; and an index by tag.

Revision ID: v4
Revises: v3
"""

from alembic import op

revision = "v4"
down_revision = "v3"
branch_labels = None
depends_on = None

# As at this revision (frozen like v2's lists: a migration describes its own revision, not
# whatever toolkit.db.schema says later).
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


def upgrade() -> None:
    op.create_index("catalog", "measurements", list(CATALOG_COLUMNS))
    op.create_index("history", "measurements", list(HISTORY_COLUMNS))
    op.create_index("by_tag", "measurements", ["tag"])


def downgrade() -> None:
    op.drop_index("by_tag", table_name="measurements")
    op.drop_index("history", table_name="measurements")
    op.drop_index("catalog", table_name="measurements")

"""v3: one database for a lab: a `tag` on measurements, the tuning trial store keyed by run
id (runs, trials, their measurements, builds, accuracy), artifact lineage, validation runs and
their per-device gate results.

Revision ID: v3
Revises: v2
"""

import sqlalchemy as sa
from alembic import op

revision = "v3"
down_revision = "v2"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = sa.Float(precision=53)


def upgrade() -> None:
    op.add_column("measurements", sa.Column("tag", sa.Text()))
    op.create_table(
        "tune_runs",
        sa.Column("run_id", sa.Text(), primary_key=True),
        sa.Column("created", _TIME, nullable=False),
        sa.Column("host", sa.Text()),
        sa.Column("tag", sa.Text()),
        sa.Column("model", sa.Text()),
        sa.Column("strategy", sa.Text()),
        sa.Column("config_json", sa.Text()),
    )
    op.create_table(
        "trials",
        sa.Column("run_id", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("json", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "key"),
    )
    op.create_table(
        "trial_measurements",
        sa.Column("run_id", sa.Text(), nullable=False),
        sa.Column("device_id", sa.Text(), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("options", sa.Text(), nullable=False),
        sa.Column("json", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "device_id", "sha256", "options"),
    )
    op.create_table(
        "builds",
        sa.Column("run_id", sa.Text(), nullable=False),
        sa.Column("recipe_key", sa.Text(), nullable=False),
        sa.Column("json", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "recipe_key"),
    )
    op.create_table(
        "accuracy",
        sa.Column("run_id", sa.Text(), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("evaluated_on", sa.Text(), nullable=False),
        sa.Column("json", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "sha256", "evaluated_on"),
    )
    op.create_table(
        "artifacts",
        sa.Column("sha256", sa.Text(), primary_key=True),
        sa.Column("parent_sha256", sa.Text()),
        sa.Column("model_sha256", sa.Text()),
        sa.Column("format", sa.Text()),
        sa.Column("recipe_json", sa.Text()),
        sa.Column("card_json", sa.Text()),
        sa.Column("created", _TIME, nullable=False),
        sa.Column("run_id", sa.Text()),
        sa.Column("tag", sa.Text()),
    )
    op.create_index("artifacts_by_parent", "artifacts", ["parent_sha256"])
    op.create_index("artifacts_by_model", "artifacts", ["model_sha256"])
    op.create_table(
        "validation_runs",
        sa.Column("run_id", sa.Text(), primary_key=True),
        sa.Column("started", _TIME, nullable=False),
        sa.Column("fleet", sa.Text()),
        sa.Column("artifact", sa.Text()),
        sa.Column("artifact_sha256", sa.Text()),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("devices", sa.Integer(), nullable=False),
        sa.Column("failed_devices", sa.Integer(), nullable=False),
        sa.Column("junit_path", sa.Text()),
        sa.Column("html_path", sa.Text()),
        sa.Column("tag", sa.Text()),
    )
    op.create_table(
        "gate_results",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Text(), nullable=False),
        sa.Column("fleet", sa.Text()),
        sa.Column("device", sa.Text(), nullable=False),
        sa.Column("check", sa.Text(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("detail", sa.Text()),
        sa.Column("junit_path", sa.Text()),
        sa.Column("html_path", sa.Text()),
        sa.Column("started", _TIME, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("gate_results_by_run", "gate_results", ["run_id"])


def downgrade() -> None:
    for table in ("gate_results", "validation_runs", "artifacts", "accuracy", "builds",
                  "trial_measurements", "trials", "tune_runs"):  # fmt: skip
        op.drop_table(table)
    with op.batch_alter_table("measurements") as batch:
        batch.drop_column("tag")

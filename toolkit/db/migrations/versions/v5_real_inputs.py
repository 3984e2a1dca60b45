"""v5: measurements record whether the timed loop cycled through real input samples
(`profile --inputs`) and the samples file's sha256.

Revision ID: v5
Revises: v4
"""

import sqlalchemy as sa
from alembic import op

revision = "v5"
down_revision = "v4"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("measurements", sa.Column("real_inputs", sa.BigInteger().with_variant(
        sa.Integer(), "sqlite")))
    op.add_column("measurements", sa.Column("inputs_sha256", sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("measurements") as batch:
        batch.drop_column("inputs_sha256")
        batch.drop_column("real_inputs")

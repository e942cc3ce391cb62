"""known difficulty: a prompt's prior_pass_rate, a dataset's difficulty_field and label_rev

Prompts may carry a known difficulty at upload (`prior_pass_rate`, or read from a numeric
metadata field the dataset names); `label_rev` counts uploads that wrote one, so a process's
cached labels know when they are stale. Every existing row has none.

Revision ID: d2e8b4a6c1f0
Revises: c7a1f4e2b9d3
Create Date: 2026-12-04 12:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "d2e8b4a6c1f0"
down_revision: str | None = "c7a1f4e2b9d3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("prompts") as batch:
        batch.add_column(sa.Column("prior_pass_rate", sa.Float(), nullable=True))
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(
            sa.Column(
                "difficulty_field",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
        batch.add_column(sa.Column("label_rev", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("label_rev")
        batch.drop_column("difficulty_field")
    with op.batch_alter_table("prompts") as batch:
        batch.drop_column("prior_pass_rate")

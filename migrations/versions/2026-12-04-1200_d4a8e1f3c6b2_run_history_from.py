"""run history_from: a run's prior may start from another run's per-prompt counts

`runs.history_from` names the source run; `run_histories` holds the snapshot of its counts
taken when the run was created. Existing runs have none.

Revision ID: d4a8e1f3c6b2
Revises: e3a9c1d7f5b2
Create Date: 2026-12-04 12:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import service.db

revision: str = "d4a8e1f3c6b2"
down_revision: str | None = "e3a9c1d7f5b2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("history_from", sa.String(length=200), nullable=True))
    op.create_table(
        "run_histories",
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("source_run_id", sa.BigInteger(), nullable=False),
        sa.Column("source_name", sa.String(length=200), nullable=False),
        sa.Column("source_seq", sa.Integer(), nullable=False),
        sa.Column("source_step", sa.Integer(), nullable=False),
        sa.Column("prompts", sa.Integer(), nullable=False),
        sa.Column("counts", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", service.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
            name=op.f("fk_run_histories_run_id_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_run_histories")),
    )


def downgrade() -> None:
    op.drop_table("run_histories")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("history_from")

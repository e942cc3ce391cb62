"""unembedded prompts index: each embedding chunk found without scanning embedded rows

A partial index on prompts (dataset_id, idx) WHERE embedding IS NULL, so the embedding pass's
next chunk and the dataset's unembedded count cost the unembedded rows, not the dataset.

Revision ID: e3b8d5a7c1f2
Revises: d4a8e1f3c6b2
Create Date: 2026-12-04 12:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e3b8d5a7c1f2"
down_revision: str | None = "d4a8e1f3c6b2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    unembedded = sa.column("embedding").is_(None)
    op.create_index(
        "ix_prompts_unembedded",
        "prompts",
        ["dataset_id", "idx"],
        postgresql_where=unembedded,
        sqlite_where=unembedded,
    )


def downgrade() -> None:
    op.drop_index("ix_prompts_unembedded", table_name="prompts")

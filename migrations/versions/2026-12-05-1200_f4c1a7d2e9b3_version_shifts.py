"""version shifts: the per-prompt shifts selection reads, apart from the replay fits continue

Revision ID: f4c1a7d2e9b3
Revises: e3b8d5a7c1f2
Create Date: 2026-12-05 12:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f4c1a7d2e9b3"
down_revision: str | None = "e3b8d5a7c1f2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # existing versions keep their shifts inside `tracking`, where the reader still looks
    with op.batch_alter_table("predictor_versions") as batch:
        batch.add_column(sa.Column("shifts", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("predictor_versions") as batch:
        batch.drop_column("shifts")

"""mixed classifier: each predictor version's P(mixed group) per prompt, for unseen prompts

Revision ID: e3a9c1d7f5b2
Revises: e3f9a2c5d8b1
Create Date: 2026-12-04 12:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e3a9c1d7f5b2"
down_revision: str | None = "e3f9a2c5d8b1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("predictor_versions") as batch:
        batch.add_column(sa.Column("mixed", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("predictor_versions") as batch:
        batch.drop_column("mixed")

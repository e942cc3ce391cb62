"""replay stored uncompressed: a version's tracking replay is written without pglz on PostgreSQL

At 1,000,000 prompts the replay is about 90 MB; PostgreSQL's default compression of it took
about 2.8 s of every fit's store (88 MB written in 3.5 s, 0.8 s uncompressed), for a third of
the disk. Rows stored before keep their compressed values; SQLite has no such setting.

Revision ID: b7e3d9f5a2c8
Revises: a6d2c8e4f1b7
Create Date: 2026-12-07 12:00:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "b7e3d9f5a2c8"
down_revision: str | None = "a6d2c8e4f1b7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE predictor_versions ALTER COLUMN tracking SET STORAGE EXTERNAL")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE predictor_versions ALTER COLUMN tracking SET STORAGE EXTENDED")

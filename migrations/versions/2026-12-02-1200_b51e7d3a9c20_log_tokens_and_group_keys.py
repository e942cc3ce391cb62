"""log tokens and group keys: stats can tell a restored log; a group counts once per slot

`outcomes.log_token` (random per ingest) lets the hot stats check that the row they last
folded is still in the log, so a restore or failover that moved the log rebuilds them.

`dedup_key` becomes `g:{step}:{prompt}:{partition}`, the same with a batch_id (the batch's
step and partition) or without one (the report's), so a group sent both ways counts once and
two partitions' groups at one step both count. Existing keys are rewritten; where the old keys
already let a group in twice, the second row keeps its old key.

Revision ID: b51e7d3a9c20
Revises: 9d4e6b1a2c07
Create Date: 2026-12-02 12:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b51e7d3a9c20"
down_revision: str | None = "9d4e6b1a2c07"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# keys of rows sent with a batch: the batch's step and partition
_FROM_BATCH = """
UPDATE outcomes SET dedup_key = (
    SELECT 'g:' || b.step || ':' || outcomes.prompt_id || ':' || b.partition
    FROM batches b WHERE b.id = outcomes.batch_id
)
WHERE dedup_key LIKE 'b:%' AND batch_id IS NOT NULL
"""
# keys of rows sent without: partition "0", unless a row sent with a batch took that key
_WITHOUT_BATCH = """
UPDATE outcomes SET dedup_key = 'g:' || step || ':' || prompt_id || ':' || '0'
WHERE dedup_key LIKE 's:%' AND NOT EXISTS (
    SELECT 1 FROM outcomes o2
    WHERE o2.run_id = outcomes.run_id
      AND o2.dedup_key = 'g:' || outcomes.step || ':' || outcomes.prompt_id || ':' || '0'
)
"""


def upgrade() -> None:
    with op.batch_alter_table("outcomes") as batch:
        batch.add_column(sa.Column("log_token", sa.String(16), nullable=True))
        batch.alter_column(
            "dedup_key", type_=sa.String(200), existing_type=sa.String(80), existing_nullable=False
        )
    op.execute(_FROM_BATCH)
    op.execute(_WITHOUT_BATCH)


def downgrade() -> None:
    op.execute(
        """
        UPDATE outcomes SET dedup_key = CASE WHEN batch_id IS NOT NULL
            THEN 'b:' || batch_id || ':' || prompt_id ELSE 's:' || step || ':' || prompt_id END
        WHERE dedup_key LIKE 'g:%' AND (batch_id IS NOT NULL OR dedup_key LIKE '%' || ':' || '0')
        """
    )
    with op.batch_alter_table("outcomes") as batch:
        batch.drop_column("log_token")
        batch.alter_column(
            "dedup_key", type_=sa.String(80), existing_type=sa.String(200), existing_nullable=False
        )

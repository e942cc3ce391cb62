"""exposure tracking: predictor versions keep their replay; existing runs keep their estimates

Each predictor version now stores the exposure replay it continued (predictor/tracking.py)
and the per-prompt shifts it gives selection. `tracking` is a new run setting, on by
default; a run's settings are fixed at creation, so runs created before it keep it off.
Upgrade before starting replicas of this version: older replicas reject the new key.

Revision ID: 9d4e6b1a2c07
Revises: 7c3d2e8a1f60
Create Date: 2026-11-27 23:30:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "9d4e6b1a2c07"
down_revision: str | None = "7c3d2e8a1f60"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

runs = sa.table(
    "runs",
    sa.column("id", sa.BigInteger()),
    sa.column("selection", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
)


def upgrade() -> None:
    with op.batch_alter_table("predictor_versions") as batch:
        batch.add_column(sa.Column("tracking", sa.LargeBinary(), nullable=True))
    conn = op.get_bind()
    for run_id, selection in conn.execute(sa.select(runs.c.id, runs.c.selection)).all():
        if "tracking" not in selection:
            conn.execute(
                runs.update()
                .where(runs.c.id == run_id)
                .values(selection={**selection, "tracking": False})
            )


def downgrade() -> None:
    # older code forbids unknown selection keys
    conn = op.get_bind()
    for run_id, selection in conn.execute(sa.select(runs.c.id, runs.c.selection)).all():
        if "tracking" in selection:
            rest = {k: v for k, v in selection.items() if k != "tracking"}
            conn.execute(runs.update().where(runs.c.id == run_id).values(selection=rest))
    with op.batch_alter_table("predictor_versions") as batch:
        batch.drop_column("tracking")

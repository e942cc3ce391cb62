"""keep the selection floor of existing runs

Runs created before `min_prior_strength` existed selected with the predictor's prior floored
at 2. A run's settings are fixed at creation, so those runs keep 2 instead of taking the new
default (4).

Revision ID: 5b1f0c2d9e41
Revises: 444c13189cb9
Create Date: 2026-11-27 04:35:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "5b1f0c2d9e41"
down_revision: str | None = "444c13189cb9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

runs = sa.table(
    "runs",
    sa.column("id", sa.BigInteger()),
    sa.column("selection", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
)


def upgrade() -> None:
    conn = op.get_bind()
    for run_id, selection in conn.execute(sa.select(runs.c.id, runs.c.selection)).all():
        if "min_prior_strength" not in selection:
            conn.execute(
                runs.update()
                .where(runs.c.id == run_id)
                .values(selection={**selection, "min_prior_strength": 2.0})
            )


def downgrade() -> None:
    pass  # older code ignores the key, so leaving it in place is harmless

"""repair run selections that the stricter settings reject

Runs could be created with settings that contradict each other or underflow: window_lo above
window_hi, n_max below n_min, Beta pseudo-counts near zero. Their batches were wrong or their
stats raised. Creation now rejects them; this brings stored runs within the new bounds so they
still load: window bounds swapped, a budget's n_min lowered to the group size, n_max raised to
n_min, pseudo-counts raised to the minimum.

Revision ID: 7c3d2e8a1f60
Revises: 5b1f0c2d9e41
Create Date: 2026-11-27 10:40:00+00:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "7c3d2e8a1f60"
down_revision: str | None = "5b1f0c2d9e41"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

runs = sa.table(
    "runs",
    sa.column("id", sa.BigInteger()),
    sa.column("group_size", sa.Integer()),
    sa.column("selection", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
)

FLOORS = {"prior_alpha": 1e-3, "prior_beta": 1e-3, "prior_strength": 1e-2}


def repaired(sel: dict[str, Any], group_size: int) -> dict[str, Any]:
    out = dict(sel)
    if out.get("budget") and out.get("n_min") is not None and out["n_min"] > group_size:
        out["n_min"] = group_size
    lo, hi = out.get("window_lo"), out.get("window_hi")
    if lo is not None and hi is not None and lo > hi:
        out["window_lo"], out["window_hi"] = hi, lo
    n_min, n_max = out.get("n_min"), out.get("n_max")
    if n_min is not None and n_max is not None and n_max < n_min:
        out["n_max"] = n_min
    for key, floor in FLOORS.items():
        if out.get(key) is not None and out[key] < floor:
            out[key] = floor
    return out


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.select(runs.c.id, runs.c.group_size, runs.c.selection)).all()
    for run_id, group_size, selection in rows:
        fixed = repaired(selection, group_size)
        if fixed != selection:
            conn.execute(runs.update().where(runs.c.id == run_id).values(selection=fixed))


def downgrade() -> None:
    pass  # the repaired values are valid for older code too

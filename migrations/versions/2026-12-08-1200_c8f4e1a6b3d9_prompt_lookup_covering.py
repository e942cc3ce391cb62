"""prompt lookup covering: the unique (dataset, client id) index carries the key and position

A report of 1,000 groups resolves 1,000 client ids; with the plain unique constraint each
probe also read the prompt's heap page (648 MB at 1,000,000 prompts, past shared_buffers).
With id and idx in the index, the probe is an index-only scan wherever the visibility map is
set, which the embedding pass's VACUUM does: 1,000 probes in 7 ms against 13 ms (pgbench on a
1,000,000-row copy). SQLite keeps its constraint: its lookups by client id are unchanged.

Revision ID: c8f4e1a6b3d9
Revises: b7e3d9f5a2c8
Create Date: 2026-12-08 12:00:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "c8f4e1a6b3d9"
down_revision: str | None = "b7e3d9f5a2c8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "CREATE UNIQUE INDEX ix_prompts_client_lookup ON prompts (dataset_id, client_id) "
        "INCLUDE (id, idx)"
    )
    op.drop_constraint("uq_prompts_dataset_id_client_id", "prompts", type_="unique")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.create_unique_constraint(
        "uq_prompts_dataset_id_client_id", "prompts", ["dataset_id", "client_id"]
    )
    op.drop_index("ix_prompts_client_lookup", table_name="prompts")

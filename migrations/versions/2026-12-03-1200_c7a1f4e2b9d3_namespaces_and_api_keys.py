"""namespaces and api keys: a key sees only its namespace's datasets and runs

Datasets and runs get a `namespace` ("default" for every existing row), and their names are
unique per namespace rather than globally. `api_keys` holds the keys `depo keys` adds, by
their sha256 only.

Revision ID: c7a1f4e2b9d3
Revises: b51e7d3a9c20
Create Date: 2026-12-03 12:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import service.db

revision: str = "c7a1f4e2b9d3"
down_revision: str | None = "b51e7d3a9c20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("datasets", "runs")


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("namespace", sa.String(length=200), nullable=False),
        sa.Column("admin", sa.Boolean(), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", service.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", service.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("name", name=op.f("uq_api_keys_name")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            # the server default fills every existing row: they all belong to "default"
            batch.add_column(
                sa.Column(
                    "namespace", sa.String(length=200), nullable=False, server_default="default"
                )
            )
            batch.drop_constraint(f"uq_{table}_name", type_="unique")
            batch.create_unique_constraint(f"uq_{table}_namespace_name", ["namespace", "name"])


def downgrade() -> None:
    """Fails while a name is used in two namespaces: there is no one global name to keep."""
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"uq_{table}_namespace_name", type_="unique")
            batch.create_unique_constraint(f"uq_{table}_name", ["name"])
            batch.drop_column("namespace")
    op.drop_table("api_keys")

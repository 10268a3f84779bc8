"""Controller: probe bookkeeping and work leases on clusters, leader fencing epochs.

Revision ID: f96319b61301
Revises: 72f6bd85453a
Create Date: 2026-11-26 23:29:07.304113+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f96319b61301"
down_revision: str | None = "72f6bd85453a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "leader_epochs",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("holder", sa.String(length=255), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leader_epochs")),
    )
    op.add_column(
        "clusters",
        sa.Column(
            "next_probe_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
    )
    op.add_column("clusters", sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "clusters",
        sa.Column("consecutive_failures", sa.Integer(), server_default="0", nullable=False),
    )
    op.add_column("clusters", sa.Column("lock_token", sa.UUID(), nullable=True))
    op.add_column(
        "clusters", sa.Column("lock_expires_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_index("ix_clusters_next_probe_at", "clusters", ["next_probe_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_clusters_next_probe_at", table_name="clusters")
    op.drop_column("clusters", "lock_expires_at")
    op.drop_column("clusters", "lock_token")
    op.drop_column("clusters", "consecutive_failures")
    op.drop_column("clusters", "failing_since")
    op.drop_column("clusters", "next_probe_at")
    op.drop_table("leader_epochs")

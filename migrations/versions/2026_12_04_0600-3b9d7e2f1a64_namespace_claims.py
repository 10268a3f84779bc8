"""Namespace claims: which workspace each edge namespace `ws-…` belongs to.

Revision ID: 3b9d7e2f1a64
Revises: 8e3f4a1c2b7d
Create Date: 2026-12-04 06:00:00+00:00

Filled from what exists: every workspace's own namespace first (oldest workspace first, where
names cut to 63 characters collide), then the namespaces its deployments and config syncs
name. A namespace two workspaces used before this stays with the first; the other's next write
there is refused and the controller will not touch the first one's objects.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3b9d7e2f1a64"
down_revision: str | None = "8e3f4a1c2b7d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "namespace_claims",
        sa.Column("namespace", sa.String(length=63), nullable=False),
        sa.Column("workspace_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_namespace_claims_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("namespace", name=op.f("pk_namespace_claims")),
    )
    op.create_index(op.f("ix_namespace_claims_workspace_id"), "namespace_claims", ["workspace_id"])
    op.execute(
        """
        INSERT INTO namespace_claims (namespace, workspace_id)
        SELECT rtrim(left('ws-' || name, 63), '-'), id FROM workspaces ORDER BY id
        ON CONFLICT DO NOTHING
        """
    )
    op.execute(
        """
        INSERT INTO namespace_claims (namespace, workspace_id)
        SELECT DISTINCT ON (namespace) namespace, workspace_id FROM rollouts
        WHERE namespace IS NOT NULL AND kind <> 'VCluster'
        ORDER BY namespace, id
        ON CONFLICT DO NOTHING
        """
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_namespace_claims_workspace_id"), table_name="namespace_claims")
    op.drop_table("namespace_claims")

"""Cluster nodes: each node's name, readiness and labels as the last successful probe saw them.

Revision ID: 9c4e1b7a2f30
Revises: 6a1f0c9d4e52
Create Date: 2026-12-04 18:00:00+00:00

One column with a default: the previous release reads the table as before during a rolling
upgrade, and the next probe of each cluster fills it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "9c4e1b7a2f30"
down_revision: str | None = "6a1f0c9d4e52"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "clusters",
        sa.Column(
            "nodes", postgresql.JSONB(astext_type=sa.Text()), server_default="[]", nullable=False
        ),
    )


def downgrade() -> None:
    op.drop_column("clusters", "nodes")

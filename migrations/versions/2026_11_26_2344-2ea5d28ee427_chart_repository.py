"""Chart repository: Helm chart archives stored in PostgreSQL.

Revision ID: 2ea5d28ee427
Revises: f96319b61301
Create Date: 2026-11-26 23:44:06.713439+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "2ea5d28ee427"
down_revision: str | None = "f96319b61301"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chart_archives",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("version", sa.String(length=128), nullable=False),
        sa.Column("filename", sa.String(length=200), nullable=False),
        sa.Column("app_version", sa.String(length=128), nullable=True),
        sa.Column("description", sa.String(length=4096), nullable=True),
        sa.Column("api_version", sa.String(length=8), nullable=False),
        sa.Column("chart_metadata", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("resource_version", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chart_archives")),
        sa.UniqueConstraint("filename", name=op.f("uq_chart_archives_filename")),
        sa.UniqueConstraint("name", "version", name=op.f("uq_chart_archives_name_version")),
    )


def downgrade() -> None:
    op.drop_table("chart_archives")

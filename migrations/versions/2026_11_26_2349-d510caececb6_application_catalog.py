"""Application catalog: applications and their immutable versions.

Revision ID: d510caececb6
Revises: 2ea5d28ee427
Create Date: 2026-11-26 23:49:22.297534+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "d510caececb6"
down_revision: str | None = "2ea5d28ee427"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "applications",
        sa.Column("display_name", sa.String(length=253), nullable=True),
        sa.Column("description", sa.String(length=4096), nullable=True),
        sa.Column("category", sa.String(length=63), nullable=True),
        sa.Column("icon", sa.String(length=2048), nullable=True),
        sa.Column("provisioner", sa.String(length=16), nullable=False),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("uid", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column(
            "labels", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column(
            "annotations",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
        ),
        sa.Column("resource_version", sa.BigInteger(), nullable=False),
        sa.Column("generation", sa.BigInteger(), server_default="1", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("deletion_timestamp", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_applications")),
        sa.UniqueConstraint("name", name=op.f("uq_applications_name")),
        sa.UniqueConstraint("uid", name=op.f("uq_applications_uid")),
    )
    op.create_index(
        "ix_applications_labels", "applications", ["labels"], unique=False, postgresql_using="gin"
    )
    op.create_table(
        "application_versions",
        sa.Column("application", sa.String(length=63), nullable=False),
        sa.Column("version", sa.String(length=128), nullable=False),
        sa.Column("helm", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("workload", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("uid", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column(
            "labels", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column(
            "annotations",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
        ),
        sa.Column("resource_version", sa.BigInteger(), nullable=False),
        sa.Column("generation", sa.BigInteger(), server_default="1", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("deletion_timestamp", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["application"],
            ["applications.name"],
            name=op.f("fk_application_versions_application_applications"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_application_versions")),
        sa.UniqueConstraint(
            "application", "version", name=op.f("uq_application_versions_application_version")
        ),
        sa.UniqueConstraint("name", name=op.f("uq_application_versions_name")),
        sa.UniqueConstraint("uid", name=op.f("uq_application_versions_uid")),
    )
    op.create_index(
        "ix_application_versions_labels",
        "application_versions",
        ["labels"],
        unique=False,
        postgresql_using="gin",
    )


def downgrade() -> None:
    op.drop_index(
        "ix_application_versions_labels", table_name="application_versions", postgresql_using="gin"
    )
    op.drop_table("application_versions")
    op.drop_index("ix_applications_labels", table_name="applications", postgresql_using="gin")
    op.drop_table("applications")

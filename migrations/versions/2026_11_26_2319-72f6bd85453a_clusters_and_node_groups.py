"""Clusters (kubeconfig encrypted) and node groups.

Revision ID: 72f6bd85453a
Revises: 78841d6ab001
Create Date: 2026-11-26 23:19:40.226029+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "72f6bd85453a"
down_revision: str | None = "78841d6ab001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "clusters",
        sa.Column("region", sa.String(length=63), nullable=False),
        sa.Column("zone", sa.String(length=63), nullable=True),
        sa.Column("provider", sa.String(length=63), nullable=True),
        sa.Column("display_name", sa.String(length=253), nullable=True),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("connection_type", sa.String(length=16), nullable=False),
        sa.Column("endpoint", sa.String(length=2048), nullable=True),
        sa.Column("kubeconfig_key_id", sa.String(length=32), nullable=True),
        sa.Column("kubeconfig_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("server", sa.String(length=2048), nullable=True),
        sa.Column("phase", sa.String(length=16), server_default="Pending", nullable=False),
        sa.Column("kubernetes_version", sa.String(length=64), nullable=True),
        sa.Column("node_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("ready_node_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "zones", postgresql.JSONB(astext_type=sa.Text()), server_default="[]", nullable=False
        ),
        sa.Column(
            "conditions",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="[]",
            nullable=False,
        ),
        sa.Column("last_probe_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_ready_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status_message", sa.String(length=1024), nullable=True),
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
            ["region"],
            ["regions.name"],
            name=op.f("fk_clusters_region_regions"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clusters")),
        sa.UniqueConstraint("name", name=op.f("uq_clusters_name")),
        sa.UniqueConstraint("uid", name=op.f("uq_clusters_uid")),
    )
    op.create_index(
        "ix_clusters_labels", "clusters", ["labels"], unique=False, postgresql_using="gin"
    )
    op.create_index("ix_clusters_phase", "clusters", ["phase"], unique=False)
    op.create_index("ix_clusters_region", "clusters", ["region"], unique=False)
    op.create_table(
        "node_groups",
        sa.Column("cluster_id", sa.BigInteger(), nullable=False),
        sa.Column("display_name", sa.String(length=253), nullable=True),
        sa.Column("selector", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("node_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("ready_node_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "nodes", postgresql.JSONB(astext_type=sa.Text()), server_default="[]", nullable=False
        ),
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
            ["cluster_id"],
            ["clusters.id"],
            name=op.f("fk_node_groups_cluster_id_clusters"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_node_groups")),
        sa.UniqueConstraint("cluster_id", "name", name=op.f("uq_node_groups_cluster_id_name")),
        sa.UniqueConstraint("uid", name=op.f("uq_node_groups_uid")),
    )


def downgrade() -> None:
    op.drop_table("node_groups")
    op.drop_index("ix_clusters_region", table_name="clusters")
    op.drop_index("ix_clusters_phase", table_name="clusters")
    op.drop_index("ix_clusters_labels", table_name="clusters", postgresql_using="gin")
    op.drop_table("clusters")

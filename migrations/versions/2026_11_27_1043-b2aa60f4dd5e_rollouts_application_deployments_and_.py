"""Rollouts (application deployments, config syncs): revisions, per-cluster dispatch targets,
events; node-group taints.

Revision ID: b2aa60f4dd5e
Revises: d510caececb6
Create Date: 2026-11-27 10:43:16.037793+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "b2aa60f4dd5e"
down_revision: str | None = "d510caececb6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("workspace_id", sa.BigInteger(), nullable=False),
        sa.Column("rollout_id", sa.BigInteger(), nullable=True),
        sa.Column("object_kind", sa.String(length=32), nullable=False),
        sa.Column("object_name", sa.String(length=63), nullable=False),
        sa.Column("type", sa.String(length=8), nullable=False),
        sa.Column("reason", sa.String(length=63), nullable=False),
        sa.Column("cluster", sa.String(length=63), nullable=True),
        sa.Column("phase", sa.String(length=16), nullable=True),
        sa.Column("message", sa.String(length=2048), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_events_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index("ix_events_created_at", "events", ["created_at"], unique=False)
    op.create_index("ix_events_rollout_id_id", "events", ["rollout_id", "id"], unique=False)
    op.create_index("ix_events_workspace_id_id", "events", ["workspace_id", "id"], unique=False)
    op.create_table(
        "rollouts",
        sa.Column("workspace_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("application_version", sa.String(length=253), nullable=True),
        sa.Column(
            "content", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column("targets", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("namespace", sa.String(length=63), nullable=True),
        sa.Column(
            "strategy", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column("paused", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("revision", sa.Integer(), server_default="0", nullable=False),
        sa.Column("phase", sa.String(length=16), server_default="Pending", nullable=False),
        sa.Column(
            "history", postgresql.JSONB(astext_type=sa.Text()), server_default="[]", nullable=False
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
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_rollouts_workspace_id_workspaces"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollouts")),
        sa.UniqueConstraint("uid", name=op.f("uq_rollouts_uid")),
        sa.UniqueConstraint(
            "workspace_id", "kind", "name", name=op.f("uq_rollouts_workspace_id_kind_name")
        ),
    )
    op.create_index(
        "ix_rollouts_application_version", "rollouts", ["application_version"], unique=False
    )
    op.create_index(
        "ix_rollouts_labels", "rollouts", ["labels"], unique=False, postgresql_using="gin"
    )
    op.create_table(
        "rollout_revisions",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("rollout_id", sa.BigInteger(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("application_version", sa.String(length=253), nullable=True),
        sa.Column(
            "content", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column("targets", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("namespace", sa.String(length=63), nullable=True),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("operator", sa.String(length=255), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["rollout_id"],
            ["rollouts.id"],
            name=op.f("fk_rollout_revisions_rollout_id_rollouts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollout_revisions")),
        sa.UniqueConstraint(
            "rollout_id", "revision", name=op.f("uq_rollout_revisions_rollout_id_revision")
        ),
    )
    op.create_table(
        "rollout_targets",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("rollout_id", sa.BigInteger(), nullable=False),
        sa.Column("cluster_id", sa.BigInteger(), nullable=False),
        sa.Column("region", sa.String(length=63), nullable=False),
        sa.Column("node_group", sa.String(length=63), nullable=True),
        sa.Column("replicas", sa.Integer(), nullable=True),
        sa.Column(
            "values", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column("desired_revision", sa.Integer(), nullable=False),
        sa.Column("removing", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("applied_revision", sa.Integer(), nullable=True),
        sa.Column("applied_hash", sa.String(length=64), nullable=True),
        sa.Column(
            "applied_objects",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="[]",
            nullable=False,
        ),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ready_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed_revision", sa.Integer(), nullable=True),
        sa.Column("previous_revision", sa.Integer(), nullable=True),
        sa.Column("phase", sa.String(length=16), server_default="Pending", nullable=False),
        sa.Column("message", sa.String(length=1024), nullable=True),
        sa.Column("ready_replicas", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "last_transition_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("last_sync_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("lock_token", sa.UUID(), nullable=True),
        sa.Column("lock_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["cluster_id"],
            ["clusters.id"],
            name=op.f("fk_rollout_targets_cluster_id_clusters"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["rollout_id"],
            ["rollouts.id"],
            name=op.f("fk_rollout_targets_rollout_id_rollouts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollout_targets")),
        sa.UniqueConstraint(
            "rollout_id", "cluster_id", name=op.f("uq_rollout_targets_rollout_id_cluster_id")
        ),
    )
    op.create_index(
        "ix_rollout_targets_cluster_id", "rollout_targets", ["cluster_id"], unique=False
    )
    op.create_index(
        "ix_rollout_targets_next_attempt_at", "rollout_targets", ["next_attempt_at"], unique=False
    )
    op.add_column(
        "node_groups",
        sa.Column(
            "taints", postgresql.JSONB(astext_type=sa.Text()), server_default="[]", nullable=False
        ),
    )


def downgrade() -> None:
    op.drop_column("node_groups", "taints")
    op.drop_index("ix_rollout_targets_next_attempt_at", table_name="rollout_targets")
    op.drop_index("ix_rollout_targets_cluster_id", table_name="rollout_targets")
    op.drop_table("rollout_targets")
    op.drop_table("rollout_revisions")
    op.drop_index("ix_rollouts_labels", table_name="rollouts", postgresql_using="gin")
    op.drop_index("ix_rollouts_application_version", table_name="rollouts")
    op.drop_table("rollouts")
    op.drop_index("ix_events_workspace_id_id", table_name="events")
    op.drop_index("ix_events_rollout_id_id", table_name="events")
    op.drop_index("ix_events_created_at", table_name="events")
    op.drop_table("events")

"""Edge agents: join tokens, agent credentials and the agent's connection, per cluster.

Revision ID: 6a1f0c9d4e52
Revises: 3b9d7e2f1a64
Create Date: 2026-12-04 10:00:00+00:00

Columns only (all nullable): nothing to fill, the tables stay readable by the previous release
during a rolling upgrade.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "6a1f0c9d4e52"
down_revision: str | None = "3b9d7e2f1a64"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME = sa.DateTime(timezone=True)
COLUMNS = [
    ("agent_join_token_hash", sa.String(length=64)),
    ("agent_join_token_expires_at", TIME),
    ("agent_credential_hash", sa.String(length=64)),
    ("agent_credential_previous_hash", sa.String(length=64)),
    ("agent_credential_issued_at", TIME),
    ("agent_session", postgresql.UUID(as_uuid=True)),
    ("agent_connected_since", TIME),
    ("agent_last_heartbeat", TIME),
    ("agent_version", sa.String(length=64)),
    ("agent_remote_address", sa.String(length=64)),
]
UNIQUE = ["agent_credential_hash", "agent_credential_previous_hash", "agent_join_token_hash"]


def upgrade() -> None:
    for name, kind in COLUMNS:
        op.add_column("clusters", sa.Column(name, kind, nullable=True))
    for column in UNIQUE:
        op.create_index(f"ix_clusters_{column}", "clusters", [column], unique=True)


def downgrade() -> None:
    for column in UNIQUE:
        op.drop_index(f"ix_clusters_{column}", table_name="clusters")
    for name, _ in reversed(COLUMNS):
        op.drop_column("clusters", name)

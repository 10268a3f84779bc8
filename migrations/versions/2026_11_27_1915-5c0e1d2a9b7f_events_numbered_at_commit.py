"""Events numbered at commit: ids in commit order per workspace without a lock held by clients.

Revision ID: 5c0e1d2a9b7f
Revises: b2aa60f4dd5e
Create Date: 2026-11-27 19:15:00+00:00

An event's id used to come from the insert, under a per-workspace advisory lock the inserting
transaction took itself and held until it committed — across its own round trips to the
database, so a thousand targets reporting at once queued behind each other's network and
scheduling delays. Now the insert takes no lock; at commit (a deferred constraint trigger)
each new event takes the workspace's lock and a fresh id, so ids still grow in commit order
within a workspace, and the lock is held only for the commit itself.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "5c0e1d2a9b7f"
down_revision: str | None = "b2aa60f4dd5e"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION events_number_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            -- Held until the transaction ends: the workspace's next commit numbers after ours.
            PERFORM pg_advisory_xact_lock(hashtextextended('events:' || NEW.workspace_id, 0));
            UPDATE events SET id = DEFAULT WHERE id = NEW.id;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE CONSTRAINT TRIGGER events_number_at_commit AFTER INSERT ON events
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION events_number_at_commit()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER events_number_at_commit ON events")
    op.execute("DROP FUNCTION events_number_at_commit()")

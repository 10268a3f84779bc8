"""Which edge namespaces a workspace may write to: its own `ws-<workspace>` and
`ws-<workspace>-…`, each recorded as the workspace's claim so that no other workspace can use
it, whatever the names (see NamespaceClaim)."""

from __future__ import annotations

from sqlalchemy import bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.workspaces import NamespaceClaim, Workspace


def default_namespace(workspace: str) -> str:
    return f"ws-{workspace}"[:63].rstrip("-")


def namespace_allowed(workspace: str, namespace: str) -> bool:
    """The name's form only: whether another workspace holds it is `claim_namespace`'s."""
    own = default_namespace(workspace)
    return namespace == own or namespace.startswith(own + "-")


async def namespace_holder(
    session: AsyncSession, workspace: Workspace, namespace: str
) -> str | None:
    """The workspace that holds `namespace`, when not `workspace` and the namespace is
    claimed (a dry run's question: it claims nothing)."""
    holder = await session.scalar(_HOLDER, {"namespace": namespace})
    return None if holder is None or holder == workspace.name else holder


async def claim_namespace(
    session: AsyncSession, workspace: Workspace, namespace: str
) -> str | None:
    """Claim `namespace` for `workspace` (kept when it has it already); None when done, else
    the name of the workspace that holds it. One statement claims and answers who holds it.
    Two workspaces claiming at once: the primary key makes one of them wait for the other's
    commit, after which its statement's snapshot is too old to show that claim; a second read
    does."""
    params = {"namespace": namespace, "workspace_id": workspace.id}
    holder = await session.scalar(_CLAIM, params)
    if holder is None:
        holder = await session.scalar(_HOLDER, {"namespace": namespace})
    return None if holder == workspace.name else holder or "(deleted)"


# The row a claim inserts is not seen by the same statement's read of the table, hence both.
_CLAIM = text("""
    WITH claimed AS (
        INSERT INTO namespace_claims (namespace, workspace_id)
        VALUES (:namespace, :workspace_id)
        ON CONFLICT (namespace) DO NOTHING
        RETURNING workspace_id
    )
    SELECT workspaces.name FROM workspaces
    WHERE workspaces.id = coalesce(
        (SELECT workspace_id FROM claimed),
        (SELECT workspace_id FROM namespace_claims WHERE namespace = :namespace)
    )
""")
_HOLDER = (
    select(Workspace.name)
    .join(NamespaceClaim, NamespaceClaim.workspace_id == Workspace.id)
    .where(NamespaceClaim.namespace == bindparam("namespace"))
)

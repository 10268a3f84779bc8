from __future__ import annotations

from sqlalchemy import ColumnElement, select, true

from app.kit.repository import ResourceRepository
from app.models.workspaces import Workspace, WorkspaceMember


class WorkspaceRepository(ResourceRepository[Workspace]):
    model = Workspace
    kind = "Workspace"

    def __init__(self, session, *, member_user_id: int | None = None) -> None:  # type: ignore[no-untyped-def]
        super().__init__(session)
        # None: every workspace (platform admins); else only those this user belongs to.
        self.member_user_id = member_user_id

    def scope(self) -> ColumnElement[bool]:
        if self.member_user_id is None:
            return true()
        memberships = select(WorkspaceMember.workspace_id).where(
            WorkspaceMember.user_id == self.member_user_id
        )
        return Workspace.id.in_(memberships)

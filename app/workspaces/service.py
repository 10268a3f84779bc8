from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import AuditTrail
from app.auth.access_cache import EVERYONE_CHANGED, announce_after_commit, workspace_changed
from app.errors import Conflict, NotFound, invalid_field
from app.kit.repository import ResourceRepository
from app.kit.service import ResourceService
from app.models.deployments import Rollout
from app.models.references import refuse_if_used
from app.models.users import User
from app.models.workspaces import Workspace, WorkspaceMember
from app.redis import RedisGateway
from app.workspaces.namespaces import claim_namespace, default_namespace
from app.workspaces.schemas import MemberOut, WorkspaceIn, WorkspaceOut, workspace_out


class WorkspaceService(ResourceService[Workspace, WorkspaceIn, WorkspaceOut]):
    in_model = WorkspaceIn

    def __init__(
        self,
        session: AsyncSession,
        repository: ResourceRepository[Workspace],
        audit: AuditTrail,
        redis: RedisGateway,
    ) -> None:
        super().__init__(session, repository, audit=audit)
        self.redis = redis  # a deletion is announced: its service accounts go with it

    async def check_delete(self, row: Workspace) -> None:
        await refuse_if_used(
            self.session,
            f"workspace {row.name!r}",
            Rollout.workspace_id == row.id,
        )
        announce_after_commit(self.session, self.redis, EVERYONE_CHANGED)

    def new_row(self, name: str) -> Workspace:
        return Workspace(name=name)

    async def check_spec(self, body: WorkspaceIn) -> None:
        manager = body.spec.manager
        if manager is not None:
            exists = await self.session.scalar(select(User.id).where(User.name == manager))
            if exists is None:
                raise invalid_field("spec.manager", f"user {manager!r} does not exist")

    async def apply_spec(self, row: Workspace, body: WorkspaceIn) -> None:
        spec = body.spec
        row.display_name = spec.displayName
        row.description = spec.description
        manager_changed = row.id is not None and row.manager != spec.manager
        row.manager = spec.manager
        row.clusters = list(spec.clusters)
        row.cluster_selector = (
            spec.clusterSelector.model_dump(mode="json") if spec.clusterSelector else None
        )
        if manager_changed:
            await self._make_manager_admin(row)
        # Its grants and members as every process keeps them (a new one: in case its name was
        # known as missing).
        announce_after_commit(self.session, self.redis, workspace_changed(row.name))

    async def after_create(self, row: Workspace, body: WorkspaceIn, change: None) -> None:
        namespace = default_namespace(row.name)
        holder = await claim_namespace(self.session, row, namespace)
        if holder is not None:
            raise Conflict(
                f"edge namespace {namespace!r}, this workspace's own, is used by workspace "
                f"{holder!r}; choose another name",
                code="AlreadyExists",
            )
        await self._make_manager_admin(row)

    async def _make_manager_admin(self, row: Workspace) -> None:
        if row.manager is None:
            return
        user_id = await self.session.scalar(select(User.id).where(User.name == row.manager))
        await self.session.execute(
            insert(WorkspaceMember)
            .values(workspace_id=row.id, user_id=user_id, role="admin")
            .on_conflict_do_update(
                index_elements=["workspace_id", "user_id"], set_={"role": "admin"}
            )
        )

    def render(self, row: Workspace) -> WorkspaceOut:
        return workspace_out(row)


class MemberService:
    """Members of one workspace; the router has already checked the caller's role."""

    def __init__(self, workspace_service: WorkspaceService, workspace: Workspace) -> None:
        self.session = workspace_service.session
        self.audit = workspace_service.audit
        self.redis = workspace_service.redis
        self.workspace = workspace

    def _members_changed(self) -> None:
        announce_after_commit(self.session, self.redis, workspace_changed(self.workspace.name))

    def _out(self, user: str, role: str) -> MemberOut:
        return MemberOut(workspace=self.workspace.name, user=user, role=role)

    def _record(self, action: str, user: str, outcome: int = 200) -> None:
        if self.audit is not None:
            self.audit.record(
                self.session, action=action, outcome=outcome, kind="WorkspaceMember", name=user
            )

    async def list(self) -> list[MemberOut]:
        rows = await self.session.execute(
            select(User.name, WorkspaceMember.role)
            .join(User, User.id == WorkspaceMember.user_id)
            .where(WorkspaceMember.workspace_id == self.workspace.id)
            .order_by(User.name)
        )
        return [self._out(name, role) for name, role in rows.all()]

    async def _membership(self, user: str, *, lock: bool) -> WorkspaceMember:
        query = (
            select(WorkspaceMember)
            .join(User, User.id == WorkspaceMember.user_id)
            .where(WorkspaceMember.workspace_id == self.workspace.id, User.name == user)
        )
        if lock:  # to change it
            query = query.with_for_update(of=WorkspaceMember)
        member = await self.session.scalar(query)
        if member is None:
            raise NotFound(f"user {user!r} is not a member of workspace {self.workspace.name!r}")
        return member

    async def read(self, user: str) -> MemberOut:
        return self._out(user, (await self._membership(user, lock=False)).role)

    async def add(self, user: str, role: str) -> MemberOut:
        user_id = await self.session.scalar(select(User.id).where(User.name == user))
        if user_id is None:
            raise invalid_field("user", f"user {user!r} does not exist")
        exists = await self.session.scalar(
            select(WorkspaceMember.id).where(
                WorkspaceMember.workspace_id == self.workspace.id,
                WorkspaceMember.user_id == user_id,
            )
        )
        if exists is not None:
            raise Conflict(f"user {user!r} is already a member", code="AlreadyExists")
        self.session.add(
            WorkspaceMember(workspace_id=self.workspace.id, user_id=user_id, role=role)
        )
        try:
            async with self.session.begin_nested():
                await self.session.flush()
        except IntegrityError:  # added by a concurrent request
            raise Conflict(f"user {user!r} is already a member", code="AlreadyExists") from None
        self._record("create", user, 201)
        self._members_changed()
        return self._out(user, role)

    async def change_role(self, user: str, role: str) -> MemberOut:
        member = await self._membership(user, lock=True)
        member.role = role
        await self.session.flush()
        self._record("update", user)
        self._members_changed()
        return self._out(user, role)

    async def remove(self, user: str) -> MemberOut:
        member = await self._membership(user, lock=True)
        out = self._out(user, member.role)
        await self.session.execute(delete(WorkspaceMember).where(WorkspaceMember.id == member.id))
        self._record("delete", user)
        self._members_changed()
        return out

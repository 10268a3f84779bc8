from __future__ import annotations

from sqlalchemy import ColumnElement
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import AuditTrail
from app.auth.access_cache import announce_after_commit, subject_changed
from app.auth.passwords import hash_secret, new_client_secret
from app.auth.principal import service_account_subject
from app.errors import invalid_field
from app.kit.repository import ResourceRepository
from app.kit.service import ResourceService
from app.models.serviceaccounts import ServiceAccount
from app.models.users import PLATFORM_ROLES
from app.models.workspaces import WORKSPACE_ROLES, Workspace
from app.redis import RedisGateway
from app.serviceaccounts.schemas import (
    ServiceAccountIn,
    ServiceAccountOut,
    service_account_out,
)


def client_id_for(workspace: str | None, name: str) -> str:
    """`sa.<workspace>.<name>`, or `sa.<name>` for a platform account.

    Workspace and account names are DNS labels, which hold no dot, so the dots tell where the
    workspace ends and how many names there are: two accounts never get one id. (The ids made
    before, `sa-<workspace>-<name>` and `sa-platform-<name>`, could: workspace "team" with
    account "b-deployer" and workspace "team-b" with "deployer" were both `sa-team-b-deployer`.
    Accounts keep the id they were given; those ids hold no dot, so no new id can meet one.)
    A dot is also safe where the id is used: in a basic-auth user name (where ':' would end
    it), a form field, and a token claim; and chart-pull user names start `chartpull.`.
    """
    return f"sa.{workspace}.{name}" if workspace is not None else f"sa.{name}"


class ServiceAccountRepository(ResourceRepository[ServiceAccount]):
    model = ServiceAccount
    kind = "ServiceAccount"

    def __init__(self, session: AsyncSession, workspace: Workspace | None) -> None:
        super().__init__(session)
        self.workspace = workspace

    def scope(self) -> ColumnElement[bool]:
        if self.workspace is None:
            return ServiceAccount.workspace_id.is_(None)
        return ServiceAccount.workspace_id == self.workspace.id


class ServiceAccountService(ResourceService[ServiceAccount, ServiceAccountIn, ServiceAccountOut]):
    """Platform accounts when `workspace` is None, else the accounts of that workspace."""

    in_model = ServiceAccountIn

    def __init__(
        self,
        session: AsyncSession,
        workspace: Workspace | None,
        audit: AuditTrail,
        redis: RedisGateway,
    ) -> None:
        super().__init__(session, ServiceAccountRepository(session, workspace), audit=audit)
        self.workspace = workspace
        self.redis = redis  # changes to an account are announced to every process
        self._new_secret: str | None = None

    def new_row(self, name: str) -> ServiceAccount:
        self._new_secret = new_client_secret()
        return ServiceAccount(
            name=name,
            workspace_id=self.workspace.id if self.workspace else None,
            client_id=client_id_for(self.workspace.name if self.workspace else None, name),
            secret_hash=hash_secret(self._new_secret),  # once per account: not worth a thread
        )

    async def check_spec(self, body: ServiceAccountIn) -> None:
        allowed = WORKSPACE_ROLES if self.workspace else PLATFORM_ROLES
        if body.spec.role not in allowed:
            raise invalid_field("spec.role", f"must be one of {', '.join(allowed)} here")

    async def apply_spec(self, row: ServiceAccount, body: ServiceAccountIn) -> None:
        row.display_name = body.spec.displayName
        row.role = body.spec.role
        row.disabled = body.spec.disabled
        if row.id is not None:  # the principal its tokens resolve to may change
            self._announce_changed(row)

    def _announce_changed(self, row: ServiceAccount) -> None:
        message = subject_changed(service_account_subject(row))
        announce_after_commit(self.session, self.redis, message)

    async def check_delete(self, row: ServiceAccount) -> None:
        self._announce_changed(row)

    def render(self, row: ServiceAccount) -> ServiceAccountOut:
        return service_account_out(row, self.workspace.name if self.workspace else None)

    async def create(self, body: ServiceAccountIn) -> ServiceAccountOut:
        out = await super().create(body)
        out.status.clientSecret = self._new_secret  # shown once, stored only as a hash
        return out

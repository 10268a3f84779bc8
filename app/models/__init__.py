"""Every ORM model, imported once so `Base.metadata` is complete (Alembic, tests)."""

from app.db.base import Base
from app.kit.idempotency import IdempotencyKey
from app.models.audit import AuditLog
from app.models.auth import RefreshToken, TokenFamily
from app.models.catalog import Application, ApplicationVersion, ChartArchive
from app.models.clusters import Cluster, NodeGroup
from app.models.controller import LeaderEpoch
from app.models.deployments import (
    Event,
    RolloutRevision,
    RolloutTarget,
)
from app.models.regions import Region
from app.models.serviceaccounts import ServiceAccount
from app.models.users import User
from app.models.workspaces import Workspace, WorkspaceMember

__all__ = [
    "Application",
    "ApplicationVersion",
    "AuditLog",
    "Base",
    "ChartArchive",
    "Cluster",
    "Event",
    "IdempotencyKey",
    "LeaderEpoch",
    "NodeGroup",
    "RefreshToken",
    "Region",
    "RolloutRevision",
    "RolloutTarget",
    "ServiceAccount",
    "TokenFamily",
    "User",
    "Workspace",
    "WorkspaceMember",
]

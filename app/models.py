"""Every ORM model, imported once so `Base.metadata` is complete (Alembic, tests)."""

from app.audit.models import AuditLog
from app.auth.models import RefreshToken, TokenFamily
from app.catalog.models import Application, ApplicationVersion, ChartArchive
from app.clusters.models import Cluster, NodeGroup
from app.controller.models import LeaderEpoch
from app.db.base import Base
from app.deployments.models import (
    Event,
    RolloutRevision,
    RolloutTarget,
)
from app.kit.idempotency import IdempotencyKey
from app.regions.models import Region
from app.serviceaccounts.models import ServiceAccount
from app.users.models import User
from app.workspaces.models import Workspace, WorkspaceMember

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

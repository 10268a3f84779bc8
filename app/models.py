"""Every ORM model, imported once so `Base.metadata` is complete (Alembic, tests)."""

from app.db.base import Base
from app.kit.idempotency import IdempotencyKey
from app.regions.models import Region

__all__ = ["Base", "IdempotencyKey", "Region"]

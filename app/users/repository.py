from __future__ import annotations

from app.db.repository import ResourceRepository
from app.users.models import User


class UserRepository(ResourceRepository[User]):
    model = User
    kind = "User"

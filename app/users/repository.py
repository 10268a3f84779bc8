from __future__ import annotations

from app.kit.repository import ResourceRepository
from app.models.users import User


class UserRepository(ResourceRepository[User]):
    model = User
    kind = "User"

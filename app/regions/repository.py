from __future__ import annotations

from app.db.repository import ResourceRepository
from app.regions.models import Region


class RegionRepository(ResourceRepository[Region]):
    model = Region
    kind = "Region"

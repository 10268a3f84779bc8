from __future__ import annotations

from app.kit.repository import ResourceRepository
from app.models.regions import Region


class RegionRepository(ResourceRepository[Region]):
    model = Region
    kind = "Region"

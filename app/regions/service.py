from __future__ import annotations

from app.kit.service import ResourceService
from app.regions.models import Region
from app.regions.schemas import RegionIn, RegionOut, region_out


class RegionService(ResourceService[Region, RegionIn, RegionOut]):
    in_model = RegionIn
    cache_namespace = "regions"

    def new_row(self, name: str) -> Region:
        return Region(name=name)

    def apply_spec(self, row: Region, body: RegionIn) -> None:
        row.display_name = body.spec.displayName
        row.description = body.spec.description

    def render(self, row: Region) -> RegionOut:
        return region_out(row)

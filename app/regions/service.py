from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from app.clusters.models import Cluster
from app.errors import Conflict
from app.kit.paging import Page, PageRequest
from app.kit.service import ResourceService
from app.regions.models import Region
from app.regions.schemas import RegionIn, RegionOut, RegionStatus, region_out


class RegionService(ResourceService[Region, RegionIn, RegionOut]):
    in_model = RegionIn
    cache_namespace = "regions"

    def new_row(self, name: str) -> Region:
        return Region(name=name)

    async def apply_spec(self, row: Region, body: RegionIn) -> None:
        row.display_name = body.spec.displayName
        row.description = body.spec.description

    def render(self, row: Region) -> RegionOut:
        return region_out(row)

    async def _counts(self, names: list[str]) -> dict[str, RegionStatus]:
        """Cluster counts are read live, not cached: probes change them all the time."""
        rows = await self.session.execute(
            select(
                Cluster.region,
                func.count(),
                func.count().filter(Cluster.phase == "Ready"),
            )
            .where(Cluster.region.in_(names))
            .group_by(Cluster.region)
        )
        return {
            region: RegionStatus(clusterCount=total, readyClusterCount=ready)
            for region, total, ready in rows.all()
        }

    async def read(self, name: str) -> dict[str, Any]:
        found = await super().read(name)
        status = (await self._counts([name])).get(name, RegionStatus())
        return {**found, "status": status.model_dump()}

    async def list(
        self, page: PageRequest, filters: dict[str, str] | None = None
    ) -> tuple[list[RegionOut], Page[Region]]:
        items, result = await super().list(page, filters)
        counts = await self._counts([item.metadata.name for item in items])
        for item in items:
            item.status = counts.get(item.metadata.name, RegionStatus())
        return items, result

    async def check_delete(self, row: Region) -> None:
        names = (
            await self.session.scalars(
                select(Cluster.name).where(Cluster.region == row.name).order_by(Cluster.name)
            )
        ).all()
        if names:
            raise Conflict(
                f"region {row.name!r} still has clusters: {', '.join(names)}",
                code="RegionHasClusters",
            )

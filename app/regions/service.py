from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel
from sqlalchemy import func, select

from app.errors import Conflict
from app.kit.service import ResourceService
from app.models.clusters import Cluster
from app.models.regions import Region
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

    async def live_status(
        self, names: list[str], rows: Sequence[Region] | None = None
    ) -> dict[str, BaseModel] | None:
        """Cluster counts change with every probe, so they are read live."""
        found = await self.session.execute(
            select(
                Cluster.region,
                func.count(),
                func.count().filter(Cluster.phase == "Ready"),
            )
            .where(Cluster.region.in_(names))
            .group_by(Cluster.region)
        )
        counts = {region: (total, ready) for region, total, ready in found.all()}
        return {
            name: RegionStatus(
                clusterCount=counts.get(name, (0, 0))[0],
                readyClusterCount=counts.get(name, (0, 0))[1],
            )
            for name in names
        }

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

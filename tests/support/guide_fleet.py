"""Fixtures of the deployment guide's fleet: five kmock edge clusters in three regions, nodes
labelled into node groups, registered through the API, with a workspace granted all of them and
a catalog application in two versions."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.deployments import FLEET, Platform, fast_settings, register_fleet
from tests.support.edge import EdgeCluster, node
from tests.support.platform import authenticated, running_app
from tests.support.services import RedisProcess


@pytest.fixture
async def fleet() -> AsyncIterator[dict[str, EdgeCluster]]:
    clusters = {}
    for name, (_, nodes) in FLEET.items():
        zone = name.split("-")[0]
        edge = EdgeCluster(nodes=[node(n, zone=zone, group=g) for n, g in nodes], auto_ready=True)
        clusters[name] = await edge.start()
    yield clusters
    for edge in clusters.values():
        await edge.stop()


@pytest.fixture
async def platform(
    clean_database: str, clean_redis: RedisProcess, fleet: dict[str, EdgeCluster]
) -> AsyncIterator[Platform]:
    """The API with the fleet registered; no controller runs until a test starts one."""
    settings = fast_settings(clean_database, redis_url=clean_redis.url)
    async with running_app(settings) as (app, client):
        await authenticated(client)
        await register_fleet(client, fleet)
        platform = Platform(app, client, fleet, settings)
        try:
            yield platform
        finally:
            await platform.stop_controllers()

"""Right after install, the built-in `monitoring-stack-v1.5.0` rolls out to the guide's regions
with an ApplicationDeployment: each edge gets a HelmChart pointing at the platform's own chart
repository and carrying its target's values, and those values, given to the chart itself,
place the stack on the target's node group."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import yaml

from app.config import Settings
from tests.support.builtin_charts import loaded, pod_specs, render
from tests.support.deployments import (
    BASE,
    EXAMPLE_YAML,
    EXPECTED,
    NAMESPACE,
    Platform,
    fast_settings,
    register_fleet,
)
from tests.support.edge import EdgeCluster
from tests.support.platform import authenticated, running_app
from tests.support.services import RedisProcess

DEFAULT_CATALOG = Settings.model_fields["builtin_charts"].get_default(call_default_factory=True)
NODE_GROUP_LABEL = "theriseunion.io/nodegroup"


@pytest.fixture
async def installed(
    clean_database: str, clean_redis: RedisProcess, fleet: dict[str, EdgeCluster]
) -> AsyncIterator[Platform]:
    """A platform as installed: the default BUILTIN_CHARTS, the guide's fleet registered, no
    application added by anyone."""
    settings = fast_settings(
        clean_database, redis_url=clean_redis.url, builtin_charts=DEFAULT_CATALOG
    )
    async with running_app(settings) as (app, client):
        await authenticated(client)
        await register_fleet(client, fleet, catalog=False)
        platform = Platform(app, client, fleet, settings)
        try:
            yield platform
        finally:
            await platform.stop_controllers()


async def test_the_built_in_monitoring_stack_rolls_out_to_the_guides_regions(
    installed: Platform,
) -> None:
    platform = installed
    for cluster in platform.fleet.values():
        cluster.auto_ready = False  # the helm-controller's install Job is completed below
    platform.start_controller()
    rollout = EXAMPLE_YAML.replace("monitoring-stack-v2.0.0", "monitoring-stack-v1.5.0")
    created = await platform.client.post(
        BASE, content=rollout, headers={"Content-Type": "application/yaml"}
    )
    assert created.status_code == 201, created.text
    await platform.wait_for(
        f"{BASE}/cross-region-app",
        lambda d: (
            sorted(t["cluster"] for t in d["status"]["targets"] if t["phase"] == "Applied")
            == sorted(EXPECTED)
        ),
    )
    with loaded("monitoring-stack") as chart:
        for name, (replicas, group) in EXPECTED.items():
            edge = platform.fleet[name]
            helm_chart = edge.get("helmcharts", NAMESPACE, "cross-region-app")
            assert helm_chart is not None, name
            spec = helm_chart["spec"]
            assert spec["repo"] == f"{platform.settings.public_url}/chartrepo"
            assert (spec["chart"], spec["version"]) == ("monitoring-stack", "1.5.0")
            assert spec["authSecret"] == {"name": "cross-region-app-chartrepo"}
            values = yaml.safe_load(spec["valuesContent"])
            assert values == {"replicaCount": replicas, "nodeSelector": {NODE_GROUP_LABEL: group}}
            # What the edge's helm-controller installs with these values: every pod of the
            # stack on the target's node group.
            docs = render(chart, values, release="cross-region-app", namespace=NAMESPACE)
            placed = {
                doc["metadata"]["name"]: spec.get("nodeSelector") for doc, spec in pod_specs(docs)
            }
            assert all(s == {NODE_GROUP_LABEL: group} for s in placed.values()), placed
            assert "cross-region-app-prometheus" in placed
            edge.complete_helm_install(NAMESPACE, "cross-region-app")
    body = await platform.ready("cross-region-app")
    assert {t["cluster"] for t in body["status"]["targets"]} == set(EXPECTED)

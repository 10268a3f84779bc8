"""The Grafana dashboard of the platform (charts/edge-platform/dashboards/edge-platform.json)
and its alert rules (charts/edge-platform/files/alerts.yaml), against a real Prometheus
scraping a real platform: the guide's rollout runs over the emulated fleet, every panel's query
is accepted by Prometheus, and the panels an operator looks at first show data."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.deployments import BASE, EXAMPLE_YAML, Platform
from tests.support.prometheus import prometheus, promtool, query
from tests.support.servers import http_server

CHART = Path(__file__).parents[2] / "charts" / "edge-platform"
DASHBOARD = CHART / "dashboards" / "edge-platform.json"
ALERTS = CHART / "files" / "alerts.yaml"
# Panels that stay empty until something goes wrong (a labelled counter has no series before
# its first increment, and a ratio of errors needs an error).
EMPTY_WHEN_HEALTHY = {"Errors by route", "Failures, retries, drift repairs"}


def panels() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_the_dashboard_is_grafanas_and_reads_the_provisioned_prometheus() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "edge-platform"
    titles = [p["title"] for p in panels()]
    assert len(titles) == len(set(titles))
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, panel["title"]
        assert panel["targets"], panel["title"]
    # The tiles never overlap: Grafana would push them around.
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        box = panel["gridPos"]
        for x in range(box["x"], box["x"] + box["w"]):
            for y in range(box["y"], box["y"] + box["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))
        assert box["x"] + box["w"] <= 24, panel["title"]


def test_the_alert_rules_are_valid_prometheus_rules() -> None:
    checked = promtool("check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 5 rules found" in checked.stdout


@pytest.mark.slow
async def test_every_panel_queries_what_the_platform_exports(
    platform: Platform, tmp_path: Path
) -> None:
    platform.start_controller()
    created = await platform.client.post(
        BASE, content=EXAMPLE_YAML, headers={"Content-Type": "application/yaml"}
    )
    assert created.status_code == 201, created.text
    await platform.ready("cross-region-app")
    async with (
        http_server(platform.app, lifespan="off") as url,
        prometheus(tmp_path, [url.removeprefix("http://")], [ALERTS]) as prom,
    ):
        # A few scrapes, a second apart, while the API is used: rate() needs two samples.
        for _ in range(8):
            await platform.client.get(f"{BASE}/cross-region-app")
            await platform.client.get("/api/v1/clusters")
            await asyncio.sleep(1)
        results = {}
        for panel in panels():
            for target in panel["targets"]:
                expr = target["expr"].replace("$region", ".*")
                results.setdefault(panel["title"], []).extend(await query(prom, expr))
        empty = sorted(t for t, r in results.items() if not r and t not in EMPTY_WHEN_HEALTHY)
        assert empty == [], f"panels without data: {empty}"

        def values(title: str) -> dict[str, float]:
            return {
                ",".join(f"{k}={v}" for k, v in sorted(r["metric"].items())): float(r["value"][1])
                for r in results[title]
            }

        by_phase = values("Clusters by phase")
        assert by_phase["phase=Ready"] == 5, by_phase
        by_region = values("Clusters by region and phase")
        assert by_region["phase=Ready,region=east-china"] == 2, by_region
        rollouts = values("Rollouts by phase")
        assert rollouts["kind=ApplicationDeployment,phase=Ready"] == 1, rollouts
        routes = values("Requests by route")
        assert any("applicationdeployments" in k for k in routes), routes
        # Prometheus evaluates the alert rules on the same metrics: loaded, and none firing.
        rules = (await prom.get("/api/v1/rules")).json()["data"]["groups"][0]["rules"]
        assert len(rules) == 5
        states = {r["name"]: (r["health"], r["state"], r.get("lastError")) for r in rules}
        assert all(s[:2] == ("ok", "inactive") for s in states.values()), states

"""The built-in charts in the catalog on first start (BUILTIN_CHARTS, the chart's
chartMuseum.builtinCharts): in /chartrepo, and Applications with their versions, created once
and never duplicated or overwritten; a setting naming a chart the platform lacks, or a name
already taken by another kind of application, is said in the log and does not stop the start."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import yaml

from app.config import BuiltinChart, Settings
from tests.support.platform import authenticated, running_app

DEFAULT: list[BuiltinChart] = Settings.model_fields["builtin_charts"].get_default(
    call_default_factory=True
)
GUIDE = {"monitoring-stack": "1.5.0", "logging-stack": "1.2.0", "ingress-nginx": "4.8.0"}
BUILTIN = "theriseunion.io/builtin=true"


def with_catalog(settings: Settings, charts: list[BuiltinChart]) -> Settings:
    return settings.model_copy(update={"builtin_charts": charts})


def test_the_default_is_the_guides_list_and_the_setting_parses() -> None:
    assert {c.name: c.version for c in DEFAULT} == GUIDE
    parsed = Settings(builtin_charts="monitoring-stack:1.5.0, ingress-nginx:4.8.0")
    assert parsed.builtin_charts == [
        BuiltinChart("monitoring-stack", "1.5.0"),
        BuiltinChart("ingress-nginx", "4.8.0"),
    ]
    assert Settings(builtin_charts="").builtin_charts == []
    with pytest.raises(ValueError, match="is not name:version"):
        Settings(builtin_charts="monitoring-stack")


async def test_first_start_puts_the_built_in_charts_in_the_repository_and_the_catalog(
    standalone_settings: Settings,
) -> None:
    settings = with_catalog(standalone_settings, DEFAULT)
    async with running_app(settings) as (_, client):
        await authenticated(client)
        index = yaml.safe_load((await client.get("/chartrepo/index.yaml")).text)
        for chart, version in GUIDE.items():
            assert version in [entry["version"] for entry in index["entries"][chart]], chart
        apps = (await client.get("/api/v1/applications", params={"labelSelector": BUILTIN})).json()
        by_name = {a["metadata"]["name"]: a for a in apps["items"]}
        assert sorted(by_name) == sorted(GUIDE)
        for chart, version in GUIDE.items():
            app = by_name[chart]
            assert app["spec"]["provisioner"] == "helm"
            assert app["spec"]["description"]  # from the chart's Chart.yaml
            assert app["status"]["latestVersion"] == version
            got = await client.get(f"/api/v1/applicationversions/{chart}-v{version}")
            assert got.status_code == 200, got.text
            spec = got.json()["spec"]
            assert spec["helm"]["chart"] == chart
            assert spec["helm"]["version"] == version
            assert spec["helm"].get("repository") is None  # this platform's own repository
        # An operator's edit of a built-in application is theirs to keep.
        edited = await client.patch(
            "/api/v1/applications/monitoring-stack",
            json={"spec": {"description": "Our fleet's monitoring"}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert edited.status_code == 200, edited.text
        audit = (await client.get("/api/v1/auditlogs")).json()["items"]
        assert {
            (e["resourceKind"], e["resourceName"], e["action"])
            for e in audit
            if e["actor"] == "start-up (BUILTIN_CHARTS)"
        } >= {
            ("Application", "monitoring-stack", "create"),
            ("ApplicationVersion", "monitoring-stack-v1.5.0", "create"),
        }, audit

    # A second start (or a second replica) adds nothing and changes nothing.
    async with running_app(settings) as (_, client):
        await authenticated(client)
        apps = (await client.get("/api/v1/applications", params={"labelSelector": BUILTIN})).json()
        assert sorted(a["metadata"]["name"] for a in apps["items"]) == sorted(GUIDE)
        versions = (await client.get("/api/v1/applicationversions")).json()
        assert sorted(v["metadata"]["name"] for v in versions["items"]) == sorted(
            f"{c}-v{v}" for c, v in GUIDE.items()
        )
        app = (await client.get("/api/v1/applications/monitoring-stack")).json()
        assert app["spec"]["description"] == "Our fleet's monitoring"


async def test_a_chart_the_platform_lacks_or_a_taken_name_is_logged_and_the_rest_loads(
    standalone_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_app(standalone_settings) as (_, client):  # an empty catalog
        await authenticated(client)
        taken = await client.post(
            "/api/v1/applications",
            json={"metadata": {"name": "ingress-nginx"}, "spec": {"provisioner": "workload"}},
        )
        assert taken.status_code == 201, taken.text
    charts = [BuiltinChart("monitoring-stack", "9.9.9"), *DEFAULT]
    caplog.set_level(logging.INFO, logger="app.catalog.builtin")
    async with running_app(with_catalog(standalone_settings, charts)) as (_, client):
        await authenticated(client)
        apps: dict[str, Any] = {
            a["metadata"]["name"]: a
            for a in (await client.get("/api/v1/applications")).json()["items"]
        }
        assert apps["ingress-nginx"]["spec"]["provisioner"] == "workload"  # left alone
        assert apps["ingress-nginx"]["status"]["versionCount"] == 0
        assert apps["monitoring-stack"]["status"]["latestVersion"] == "1.5.0"
        assert "logging-stack" in apps
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("monitoring-stack 9.9.9" in m and "monitoring-stack:1.5.0" in m for m in errors), (
        errors
    )
    assert any("application 'ingress-nginx' exists" in m for m in errors), errors


async def test_replicas_starting_at_once_each_start_and_add_each_entry_once(
    standalone_settings: Settings,
) -> None:
    """`serve --workers 4`, or four replicas: four start-ups race for the same rows."""
    from app.catalog.builtin import default_charts_dir, load_charts
    from app.db.engine import create_engine, create_sessionmaker
    from app.redis import RedisGateway

    folder = default_charts_dir()
    assert folder is not None
    engine = create_engine(standalone_settings)
    redis = RedisGateway(url=standalone_settings.redis_url)
    try:
        sessionmaker = create_sessionmaker(engine)
        await asyncio.gather(*(load_charts(sessionmaker, redis, folder, DEFAULT) for _ in range(4)))
    finally:
        await redis.close()
        await engine.dispose()
    async with running_app(standalone_settings) as (_, client):
        await authenticated(client)
        apps = (await client.get("/api/v1/applications", params={"labelSelector": BUILTIN})).json()
        assert sorted(a["metadata"]["name"] for a in apps["items"]) == sorted(GUIDE)
        versions = (await client.get("/api/v1/applicationversions")).json()
        assert len(versions["items"]) == len(GUIDE)

"""Health, readiness, version, metrics and the OpenAPI document."""

from __future__ import annotations

import httpx

import app
from tests.support.regions import API, region


async def test_health_and_version(api: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/livez"):
        response = await api.get(path)
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
    version = (await api.get("/version")).json()
    assert version["version"] == app.__version__
    assert version["apiVersion"] == "edge.theriseunion.io/v1alpha1"


async def test_readyz_reports_each_dependency(api: httpx.AsyncClient) -> None:
    ready = await api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ok",
        "checks": {"postgres": {"status": "ok"}, "redis": {"status": "ok", "mode": "standalone"}},
    }


async def test_metrics_by_route_template_and_status(api: httpx.AsyncClient) -> None:
    await api.post(API, json=region("east-china"))
    await api.get(f"{API}/east-china")
    await api.get(f"{API}/missing")
    text = (await api.get("/metrics")).text
    assert 'edge_http_requests_total{method="GET",route="/api/v1/regions/{name}",status="200"}' in (
        text
    )
    assert 'route="/api/v1/regions/{name}",status="404"' in text
    # Templates, not raw paths: bounded label sets (the fleet's gauges name regions, by design).
    http = [line for line in text.splitlines() if line.startswith("edge_http_")]
    assert not [line for line in http if "east-china" in line or "missing" in line]
    assert "edge_http_request_duration_seconds_bucket" in text
    assert "edge_http_requests_in_flight" in text
    assert "edge_db_pool_connections_in_use" in text


async def test_openapi_documents_every_operation(api: httpx.AsyncClient) -> None:
    document = (await api.get("/openapi.json")).json()
    operations = [
        op for path in document["paths"].values() for op in path.values() if "operationId" in op
    ]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids))
    assert {
        "listRegions",
        "createRegion",
        "readRegion",
        "replaceRegion",
        "patchRegion",
        "deleteRegion",
    } <= set(ids)
    create = document["paths"]["/api/v1/regions"]["post"]
    content = create["requestBody"]["content"]
    assert set(content) == {"application/json", "application/yaml"}
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/RegionIn"}
    schemas = document["components"]["schemas"]
    assert "RegionIn" in schemas
    assert "ObjectMetaIn" in schemas
    patch = document["paths"]["/api/v1/regions/{name}"]["patch"]
    assert "application/merge-patch+json" in patch["requestBody"]["content"]

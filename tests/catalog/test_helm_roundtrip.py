"""Helm's own code (the Go SDK, through helm-python-sdk) against the repository over HTTP:
the index and the archives are what Helm expects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import helm_python as helm
import httpx
import pytest
import uvicorn

from app.config import Settings
from app.embedded import free_port
from app.main import create_app
from tests.support.charts import chart_archive
from tests.support.platform import authenticated


@pytest.fixture
async def served(standalone_settings: Settings) -> AsyncIterator[str]:
    """The API on a real loopback port (Helm speaks HTTP, not ASGI)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(standalone_settings), host="127.0.0.1", port=port, log_config=None
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
        await asyncio.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


async def test_helm_reads_the_index_pulls_and_renders(served: str, tmp_path: Path) -> None:
    async with httpx.AsyncClient(base_url=served) as client:
        await authenticated(client)
        uploaded = await client.post(
            "/chartrepo/api/charts",
            content=chart_archive("demo", "1.2.3"),
            headers={"content-type": "application/gzip"},
        )
        assert uploaded.status_code == 201
        account = (
            await client.post(
                "/api/v1/serviceaccounts",
                json={"metadata": {"name": "helm"}, "spec": {"role": "platform-regular"}},
            )
        ).json()["status"]
    repo = f"{served}/chartrepo"
    user, password = account["clientId"], account["clientSecret"]

    index = await asyncio.to_thread(helm.repo_index, repo, username=user, password=password)
    assert {"demo", "hello-edge"} <= set(index["entries"])

    for name, version in (("demo", "1.2.3"), ("hello-edge", "0.1.0")):
        await asyncio.to_thread(
            helm.pull, name, repo_url=repo, version=version, destination=str(tmp_path),
            username=user, password=password,
        )  # fmt: skip
    demo = helm.Chart.load_archive((tmp_path / "demo-1.2.3.tgz").read_bytes())
    assert demo.version == "1.2.3"
    rendered = demo.render({"replicaCount": 3}, name="edge-demo", namespace="apps")
    manifest = next(text for path, text in rendered.items() if path.endswith("cm.yaml"))
    assert "name: edge-demo" in manifest
    assert 'replicas: "3"' in manifest

    hello = helm.Chart.load_archive((tmp_path / "hello-edge-0.1.0.tgz").read_bytes())
    manifests = hello.render({"nodeSelector": {"theriseunion.io/nodegroup": "edge"}}, name="hi")
    deployment = next(text for path, text in manifests.items() if path.endswith("deployment.yaml"))
    assert "theriseunion.io/nodegroup: edge" in deployment

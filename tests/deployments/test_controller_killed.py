"""A controller process killed (SIGKILL) in the middle of a rollout: another one finishes it
once the dead one's leases expire, and nothing is lost."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from tests.support.deployments import BASE, EXAMPLE_YAML, EXPECTED, NAMESPACE, Platform
from tests.support.platform import ENCRYPTION_KEY
from tests.support.processes import clean_env
from tests.support.services import RedisProcess

pytestmark = pytest.mark.slow


async def test_another_controller_finishes_what_a_killed_one_started(
    platform: Platform, redis_server: RedisProcess
) -> None:
    beijing = platform.fleet["beijing-cluster"]
    beijing.apply_delay = 2.0  # a slow link: the killed controller is caught mid-apply there
    env = clean_env(
        DATABASE_URL=platform.settings.database_url,
        REDIS_URL=redis_server.url,
        ENCRYPTION_KEY=ENCRYPTION_KEY,
        ALLOW_PRIVATE_CLUSTER_ENDPOINTS="true",
        ALLOW_INSECURE_CLUSTER_ENDPOINTS="true",
        CLUSTER_PROBE_INTERVAL="200ms",
        DISPATCH_STATUS_INTERVAL="200ms",
        DISPATCH_LEASE_DURATION="3s",
        DISPATCH_RETRY_MAX="1s",
    )
    doomed = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", "controller",
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        created = await platform.client.post(
            BASE, content=EXAMPLE_YAML, headers={"Content-Type": "application/yaml"}
        )
        assert created.status_code == 201
        await platform.wait_for(
            f"{BASE}/cross-region-app", lambda d: d["status"]["summary"]["ready"] == 3
        )
        for _ in range(100):
            if beijing.applies[("namespaces", None, NAMESPACE)]:
                break
            await asyncio.sleep(0.1)
        assert beijing.get("deployments", NAMESPACE, "grafana") is None  # still on its way
    finally:
        doomed.kill()  # SIGKILL: no chance to release anything
        await asyncio.wait_for(doomed.wait(), 30)

    beijing.apply_delay = 0.0
    platform.start_controller()
    body = await platform.ready("cross-region-app", within=30)
    assert {t["cluster"] for t in body["status"]["targets"]} == set(EXPECTED)
    for name in ("prometheus", "grafana"):
        obj = beijing.get("deployments", NAMESPACE, name)
        assert obj is not None
        assert obj["spec"]["replicas"] == 3

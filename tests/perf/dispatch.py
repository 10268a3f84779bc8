"""Distribution figures, at any fleet size: write → Applied latency on every target, and the
platform's fan-out rate against what a bare client achieves on the same emulator."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import asyncpg

from tests.perf.fleet import Fleet
from tests.perf.harness import Platform, Suite, delete_and_wait, post, spread

APPLIED = (
    "SELECT extract(epoch FROM t.applied_at - r.created_at) AS latency,"
    " extract(epoch FROM t.applied_at) AS at, extract(epoch FROM r.created_at) AS written"
    " FROM rollout_targets t JOIN rollouts o ON o.id = t.rollout_id"
    " JOIN rollout_revisions r ON r.rollout_id = o.id AND r.revision = 1 WHERE o.name = $1"
)
PENDING = (
    "SELECT count(*) FROM rollout_targets t JOIN rollouts o ON o.id = t.rollout_id"
    " WHERE o.name = $1 AND t.applied_at IS NULL"
)


def deployment(name: str, workspace: str, targets: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"applicationVersionRef": "agent-v1.0.0", "targets": targets,
                 "namespace": f"ws-{workspace}-{name}"},
    }  # fmt: skip


async def seed_version(session: aiohttp.ClientSession) -> None:
    """The catalog entry every benchmark deploys: one Deployment of one container."""
    await post(session, "/api/v1/applications", {
        "metadata": {"name": "agent"}, "spec": {"provisioner": "workload"},
    })  # fmt: skip
    container = {"name": "agent", "image": "registry.example/agent:1"}
    await post(session, "/api/v1/applicationversions", {
        "metadata": {"name": "agent-v1.0.0"},
        "spec": {"application": "agent", "version": "1.0.0", "workload": {"deployments": [
            {"name": "agent", "spec": {"replicas": 1,
                                       "template": {"spec": {"containers": [container]}}}},
        ]}},
    })  # fmt: skip


async def deploy_and_wait(platform: Platform, session: aiohttp.ClientSession, workspace: str,
                          name: str, targets: list[dict[str, Any]],
                          within: float) -> list[asyncpg.Record]:  # fmt: skip
    """Create a deployment and wait until every target is applied: the targets' rows."""
    await post(session, f"/api/v1/workspaces/{workspace}/applicationdeployments",
               deployment(name, workspace, targets))  # fmt: skip
    conn = await asyncpg.connect(platform.database)
    try:
        deadline = time.monotonic() + within
        # A count, not the rows, while waiting: polling a thousand rows would load the database
        # being measured.
        while await conn.fetchval(PENDING, name):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: targets still not applied after {within} s")
            await asyncio.sleep(0.1)
        return await conn.fetch(APPLIED, name)
    finally:
        await conn.close()


async def distribution_run(platform: Platform, session: aiohttp.ClientSession, *, workspace: str,
                           name: str, targets: list[dict[str, Any]],
                           clusters: int) -> tuple[float, float]:  # fmt: skip
    """One deployment written and waited for until every target is applied: (P99 over the
    targets of write → Applied in seconds, targets/s from the write to the last one)."""
    rows = await deploy_and_wait(platform, session, workspace, name, targets,
                                 within=60 + clusters / 5)  # fmt: skip
    if len(rows) < clusters:
        raise RuntimeError(f"only {len(rows)} of {clusters} targets applied")
    latencies = sorted(float(r["latency"]) for r in rows)
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    span = max(float(r["at"]) for r in rows) - float(rows[0]["written"])
    return p99, clusters / span


def _replicas(what: str, replicas: int) -> str:
    """A figure measured with more than one controller is a reference beside the target's."""
    return what if replicas == 1 else f"reference: {what}, {replicas} controller replicas"


async def distribution(suite: Suite, platform: Platform, *, workspace: str,
                       targets: list[dict[str, Any]], clusters: int, bound: float, runs: int,
                       cleanup: bool = False, replicas: int = 1) -> list[float]:  # fmt: skip
    """Write → Applied on every target; P99 over targets, per run. Returns targets/s per run.
    `cleanup`: delete each deployment before the next run, so that a run does not share the
    controller with the drift checks of the ones before. `replicas`: controllers running."""
    p99s, rates = [], []
    async with platform.session() as session:
        for run in range(runs):
            name = f"spread-{clusters}-{replicas}-{run}"
            p99, rate = await distribution_run(platform, session, workspace=workspace,
                                               name=name, targets=targets,
                                               clusters=clusters)  # fmt: skip
            p99s.append(p99)
            rates.append(rate)
            if cleanup:
                path = f"/api/v1/workspaces/{workspace}/applicationdeployments/{name}"
                await delete_and_wait(session, path, within=60 + clusters / 5)
    value = spread(p99s)
    what = _replicas(f"distribution write → Applied, {clusters} clusters (P99)", replicas)
    suite.record(what, value, "s", f"≤ {bound} s",
                 value["median"] <= bound if replicas == 1 else None)  # fmt: skip
    return rates


async def fanout_ceiling(fleet: Fleet, clusters: int) -> float:
    """What a bare aiohttp client achieves against the same emulator doing the calls of a
    target's first pass — read the namespace (whose it is, before writing: absent on a new
    target), apply it, apply the Deployment (its answer carries the status readiness is read
    from) — 64 at a time: targets/s."""
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ceiling"}}
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": 1},
            "metadata": {"name": "agent", "namespace": "ceiling"}}  # fmt: skip
    apply = {"Content-Type": "application/apply-patch+yaml"}
    limit = asyncio.Semaphore(64)
    async with fleet.session() as session:

        async def target(i: int) -> None:
            async with limit:
                root = fleet.server(i)
                async with session.get(f"{root}/api/v1/namespaces/ceiling") as response:
                    await response.read()
                async with session.patch(f"{root}/api/v1/namespaces/ceiling", json=namespace,
                                         headers=apply):  # fmt: skip
                    pass
                deployment_url = f"{root}/apis/apps/v1/namespaces/ceiling/deployments/agent"
                async with session.patch(deployment_url, json=body, headers=apply) as response:
                    await response.read()

        started = time.perf_counter()
        await asyncio.gather(*(target(i) for i in range(clusters)))
        return clusters / (time.perf_counter() - started)


async def fanout(suite: Suite, fleet: Fleet, rates: list[float], clusters: int,
                 replicas: int = 1) -> None:  # fmt: skip
    """The platform's targets/s of each distribution run over the bare client's, run for run."""
    ceiling = [await fanout_ceiling(fleet, clusters) for _ in rates]
    ratio = spread([r / c for r, c in zip(rates, ceiling, strict=True)])
    what = _replicas(f"fan-out targets/s / raw client ceiling, {clusters} clusters", replicas)
    suite.record(what, ratio, "x", "≥ 0.3", ratio["median"] >= 0.3 if replicas == 1 else None,
                 ceiling_targets_per_s=spread(ceiling)["median"],
                 platform_targets_per_s=spread(rates)["median"])  # fmt: skip

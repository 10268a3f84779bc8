"""The fleet-scale figures of issue #9, on a platform of their own.

Ten thousand clusters are registered through the API, a hundred per region. A thousand of them
are *managed*: enabled, served by the fleet emulator (in its own process), probed every 10 s
and deployed to. The other nine thousand are registered disabled — the controller leaves them
alone, as it would a fleet's parked sites — because probing ten thousand clusters every 10 s is
beyond the two cores this runs on, and what they are here for is what a region list has to
skip over. In that platform, in this order (each part starts what it needs and cleans up):

1. the controller's footprint: a fresh controller taken from 0 to 1,000 managed clusters —
   its RSS after each step has been probed (slope per cluster), then its CPU time over a
   window once every cluster has been probed;
2. listing, with the controller probing the managed clusters meanwhile: one region's clusters
   among the ten thousand, and one page of 1,000 deployments;
3. distribution to all 1,000 managed clusters (write → Applied P99) and its fan-out rate
   against a bare client's on the same emulator;
4. status reads while every managed cluster changes phase on every probe, against the same
   reads while they are quiet;
5. distribution and fan-out again with two controller replicas, as references.

`--quick` runs the same code once, on a tenth of the managed clusters and a twentieth of the
registered ones, without 3 (the small pass measures distribution already).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import aiohttp
import asyncpg

from tests.perf.dispatch import deploy_and_wait, deployment, distribution, fanout, seed_version
from tests.perf.fleet import Fleet
from tests.perf.harness import (
    RUNS,
    Controller,
    Platform,
    Suite,
    delete_and_wait,
    note,
    patch,
    platform,
    post,
    post_all,
    spread,
)
from tests.perf.load import open_loop

REGION_SIZE = 100  # a region's clusters fit the list's default page (limit=100)
PROBE_INTERVAL = 10.0  # CLUSTER_PROBE_INTERVAL of issue #9's figures, seconds
# Open-loop rates of the latency figures: modest — each a fraction of what one API worker
# serves of that request here — so that a figure is the latency of a request on a platform at
# its normal work, not the wait in a queue behind a saturated one.
CLUSTER_LIST_RATE = 5.0
DEPLOYMENT_LIST_RATE = 0.5
STATUS_READ_RATE = 2.0
REGRESSION_BOUND = 1.25


@dataclass(frozen=True)
class Sizes:
    managed: int  # clusters probed and deployed to
    registered: int  # all clusters; those beyond `managed` are registered disabled
    deployments: int  # deployments in the listed page
    steps: tuple[int, ...]  # managed clusters at each RSS sample
    window: float  # seconds of each CPU window: at least a probe interval
    seconds: float  # of each latency measurement
    runs: int
    distribution: bool


FULL = Sizes(1000, 10_000, 1000, (0, 250, 500, 1000), 30.0, 30.0, RUNS, True)
QUICK = Sizes(100, 500, 100, (0, 50, 100), PROBE_INTERVAL, 2.0, 1, False)


# -- the controller process -----------------------------------------------------------------


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(x for x in status if x.startswith("VmRSS:"))
    return int(line.split()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        # Fields after the command name (which may hold spaces), from field 3 (state) on.
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the fleet ------------------------------------------------------------------------------


def managed_name(i: int) -> str:
    return f"managed-{i:04d}"


def managed_regions(sizes: Sizes) -> list[str]:
    return [f"managed-{r:02d}" for r in range(sizes.managed // REGION_SIZE)]


async def seed(api: Platform, fleet: Fleet, sizes: Sizes) -> None:
    """The clusters (all disabled; managed ones are enabled by the measurements), a workspace
    granted the managed ones, one granted a parked one, the catalog version."""
    parked = sizes.registered - sizes.managed
    regions = managed_regions(sizes) + [f"parked-{r:02d}" for r in range(parked // REGION_SIZE)]
    clusters = [
        {"metadata": {"name": managed_name(i), "labels": {"fleet": "managed"}},
         "spec": {"region": f"managed-{i // REGION_SIZE:02d}", "enabled": False,
                  "connection": {"kubeconfig": fleet.kubeconfig(i)}}}
        for i in range(sizes.managed)
    ] + [
        {"metadata": {"name": f"parked-{i:04d}"},
         "spec": {"region": f"parked-{i // REGION_SIZE:02d}", "enabled": False,
                  "connection": {"kubeconfig": fleet.kubeconfig(sizes.managed + i)}}}
        for i in range(parked)
    ]  # fmt: skip
    async with api.session() as session:
        await post_all(session, "/api/v1/regions", ({"metadata": {"name": r}} for r in regions))
        started = time.perf_counter()
        await post_all(session, "/api/v1/clusters", clusters)
        note(f"{len(clusters)} clusters registered at "
             f"{len(clusters) / (time.perf_counter() - started):.0f}/s")  # fmt: skip
        await post(session, "/api/v1/workspaces", {
            "metadata": {"name": "fleet"},
            "spec": {"clusterSelector": {"matchLabels": {"fleet": "managed"}}},
        })  # fmt: skip
        await post(session, "/api/v1/workspaces", {
            "metadata": {"name": "listing"}, "spec": {"clusters": ["parked-0000"]},
        })  # fmt: skip
        await seed_version(session)


async def set_enabled(session: aiohttp.ClientSession, names: list[str], enabled: bool) -> None:
    limit = asyncio.Semaphore(16)

    async def one(name: str) -> None:
        async with limit:
            await patch(session, f"/api/v1/clusters/{name}", {"spec": {"enabled": enabled}})

    await asyncio.gather(*(one(name) for name in names))


async def wait_probed(database: str, count: int, *, since: datetime | None = None,
                      phase: str | None = "Ready", within: float = 120) -> None:  # fmt: skip
    """Until `count` clusters are in `phase` (None: any) and were probed `since`. Enabling a
    cluster makes it Pending, so Ready means probed since; only managed clusters are enabled."""
    conn = await asyncpg.connect(database)
    try:
        query = (
            "SELECT count(*) FROM clusters WHERE enabled AND phase = coalesce($2::text, phase)"
            " AND last_probe_time >= coalesce($1::timestamptz, '-infinity')"
        )
        deadline = time.monotonic() + within
        while (done := await conn.fetchval(query, since, phase)) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{done} of {count} clusters probed after {within} s")
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


# -- figures --------------------------------------------------------------------------------


async def footprint(suite: Suite, api: Platform, sizes: Sizes) -> None:
    """Per run, a fresh controller from 0 to `managed` clusters: RSS after each step is Ready
    and probed once more (a client in steady use, not just built; slope by least squares),
    then CPU over `window` — and how many probes it made meanwhile, since a controller that
    cannot keep up probes less often than asked and spends less than keeping up would cost."""
    names = [managed_name(i) for i in range(sizes.managed)]
    slopes, warm_slopes, loads, samples, probe_rates = [], [], [], [], []
    async with api.session() as session:
        for _ in range(sizes.runs):
            await set_enabled(session, names, False)
            controller = await api.controller()
            try:
                await asyncio.sleep(2.0)  # its first rounds of claims (one a second)
                rss = [rss_kib(controller.pid)]
                for before, after in pairwise(sizes.steps):
                    await set_enabled(session, names[before:after], True)
                    await wait_probed(api.database, after)
                    await wait_probed(api.database, after, since=datetime.now(UTC))
                    rss.append(rss_kib(controller.pid))
                slopes.append(statistics.linear_regression(sizes.steps, rss).slope)
                # The same past the first step, which also holds the controller's one-time
                # growth once it works (pools, buffers, allocator arenas).
                warm = statistics.linear_regression(sizes.steps[1:], rss[1:]).slope
                warm_slopes.append(warm)
                samples.append(dict(zip(sizes.steps, rss, strict=True)))
                probes = await controller.counter("edge_cluster_probes_total")
                used, started = cpu_seconds(controller.pid), time.monotonic()
                await asyncio.sleep(sizes.window)
                used, took = cpu_seconds(controller.pid) - used, time.monotonic() - started
                probes = await controller.counter("edge_cluster_probes_total") - probes
                loads.append(100 * used / took)
                probe_rates.append(probes / took)
            finally:
                api.stop(controller.process)
    value = spread(slopes)
    suite.record(f"controller RSS per managed cluster, 0 → {sizes.managed} (slope)", value,
                 "KiB", "≤ 80 KiB", value["median"] <= 80,
                 rss_kib_by_clusters=samples)  # fmt: skip
    suite.record(f"reference: controller RSS per managed cluster, {sizes.steps[1]} → "
                 f"{sizes.managed} (slope)", spread(warm_slopes), "KiB", "—", None)  # fmt: skip
    value = spread(loads)
    suite.record(f"controller CPU probing {sizes.managed} clusters every "
                 f"{PROBE_INTERVAL:g} s", value, "% core", "≤ 25 %", value["median"] <= 25,
                 probes_per_s=spread(probe_rates),
                 probes_per_s_asked=sizes.managed / PROBE_INTERVAL)  # fmt: skip


async def latency(session: aiohttp.ClientSession, path: str, *, rate: float,
                  seconds: float) -> float:  # fmt: skip
    """p99 in ms of GET `path`, open loop at `rate`."""

    async def get(_: int) -> None:
        async with session.get(path) as response:
            await response.read()
            assert response.status == 200, response.status

    return (await open_loop(get, rate=rate, seconds=seconds)).percentile(99) * 1000


async def wait_phase(session: aiohttp.ClientSession, path: str, phase: str,
                     within: float) -> None:  # fmt: skip
    """Until the object's status says `phase` (targets applied are then read back as Ready)."""
    deadline = time.monotonic() + within
    while True:
        async with session.get(path) as response:
            if (await response.json())["status"].get("phase") == phase:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} not {phase} after {within} s")
        await asyncio.sleep(0.5)


async def count_items(session: aiohttp.ClientSession, path: str) -> int:
    async with session.get(path) as response:
        return len((await response.json())["items"])


async def listing(suite: Suite, api: Platform, sizes: Sizes) -> None:
    """One region's clusters among all registered, and one page of `deployments`."""
    clusters = f"/api/v1/clusters?region={managed_regions(sizes)[0]}"
    deployments = f"/api/v1/workspaces/listing/applicationdeployments?limit={sizes.deployments}"
    async with api.session() as session:
        # Deployments of a parked cluster: the controller gives each one look and leaves it,
        # so the list is read on a platform at its usual work, not behind a thousand rollouts.
        await post_all(session, "/api/v1/workspaces/listing/applicationdeployments",
                       (deployment(f"listed-{i:04d}", "listing", [{"clusters": ["parked-0000"]}])
                        for i in range(sizes.deployments)))  # fmt: skip
        found = (await count_items(session, clusters), await count_items(session, deployments))
        if found != (REGION_SIZE, sizes.deployments):
            raise RuntimeError(f"listed {found}, not {(REGION_SIZE, sizes.deployments)}")
        region_p99s, page_p99s = [], []
        for _ in range(sizes.runs):
            region_p99s.append(await latency(session, clusters, rate=CLUSTER_LIST_RATE,
                                             seconds=sizes.seconds))  # fmt: skip
            page_p99s.append(await latency(session, deployments, rate=DEPLOYMENT_LIST_RATE,
                                           seconds=sizes.seconds))  # fmt: skip
    value = spread(region_p99s)
    suite.record(f"list one region's {REGION_SIZE} clusters among {sizes.registered} (p99, "
                 f"{CLUSTER_LIST_RATE:g}/s)", value, "ms", "≤ 50 ms",
                 value["median"] <= 50)  # fmt: skip
    value = spread(page_p99s)
    suite.record(f"list {sizes.deployments} deployments, one page (p99, "
                 f"{DEPLOYMENT_LIST_RATE:g}/s)", value, "ms", "≤ 60 ms",
                 value["median"] <= 60)  # fmt: skip


async def status_under_churn(suite: Suite, api: Platform, fleet: Fleet, sizes: Sizes) -> None:
    """GET of the first row of the managed workspace's deployment list — a deployment spanning
    every managed cluster, the one a console opens to watch a rollout, whose status gathers a
    target per cluster — while every managed cluster changes phase on each probe (the prober
    writes each change and passes it to the cluster's targets), against the same reads while
    the clusters are quiet: p99 ratio per run."""
    regions = [{"region": r} for r in managed_regions(sizes)]
    ratios: list[float] = []
    quiet: list[float] = []
    churning: list[float] = []
    async with api.session() as session:
        await deploy_and_wait(api, session, "fleet", "status", regions, within=60 + sizes.managed)
        async with session.get("/api/v1/workspaces/fleet/applicationdeployments") as response:
            first: dict[str, Any] = (await response.json())["items"][0]
        path = f"/api/v1/workspaces/fleet/applicationdeployments/{first['metadata']['name']}"
        await wait_phase(session, path, "Ready", within=60 + sizes.managed)
        try:
            for run in range(sizes.runs):
                if run:  # a round of quiet probes: every cluster Ready again
                    await wait_probed(api.database, sizes.managed, since=datetime.now(UTC))
                quiet.append(await latency(session, path, rate=STATUS_READ_RATE,
                                           seconds=sizes.seconds))  # fmt: skip
                await fleet.set_flapping(True)
                # Every cluster has flipped at least once: the churn is in full swing.
                await wait_probed(api.database, sizes.managed, since=datetime.now(UTC),
                                  phase=None)  # fmt: skip
                churning.append(await latency(session, path, rate=STATUS_READ_RATE,
                                              seconds=sizes.seconds))  # fmt: skip
                await fleet.set_flapping(False)
                ratios.append(churning[-1] / quiet[-1])
        finally:
            await fleet.set_flapping(False)
        await delete_and_wait(session, path, within=60 + sizes.managed)
    value = spread(ratios)
    suite.record(f"status read p99 with {sizes.managed} clusters changing phase every "
                 f"{PROBE_INTERVAL:g} s / quiet", value, "x", f"≤ {REGRESSION_BOUND}",
                 value["median"] <= REGRESSION_BOUND,
                 quiet_p99_ms=spread(quiet), churning_p99_ms=spread(churning))  # fmt: skip


async def replicated_distribution(suite: Suite, api: Platform, fleet: Fleet, sizes: Sizes,
                                  controller: Controller) -> None:  # fmt: skip
    """Distribution and fan-out again with two controller replicas sharing the targets by
    their leases (the deployment guide runs three), as references beside the one-controller
    targets: how far more replicas carry on this machine's two cores. Both start fresh, so
    the first run also pays for connecting to the clusters the replica has not probed."""
    api.stop(controller.process)
    for _ in range(2):
        await api.controller(LEADER_ELECT="true")
    await wait_probed(api.database, sizes.managed, since=datetime.now(UTC))
    rates = await distribution(
        suite, api, workspace="fleet", targets=[{"region": r} for r in managed_regions(sizes)],
        clusters=sizes.managed, bound=5.0, runs=sizes.runs, cleanup=True, replicas=2,
    )  # fmt: skip
    await fanout(suite, fleet, rates, sizes.managed, replicas=2)


# -- the run --------------------------------------------------------------------------------


async def run(suite: Suite, admin_url: str, redis_url: str) -> None:
    sizes = QUICK if suite.quick else FULL
    fleet = await Fleet(sizes.managed, own_process=True, tls=True).start()
    try:
        async with platform(admin_url, redis_url, "edge_perf_scale",
                            CLUSTER_PROBE_INTERVAL=f"{PROBE_INTERVAL:g}s") as api:  # fmt: skip
            await seed(api, fleet, sizes)
            note("controller footprint")
            await footprint(suite, api, sizes)
            # The footprint leaves every managed cluster enabled: a controller for the rest.
            controller = await api.controller()
            await wait_probed(api.database, sizes.managed)
            note("listing")
            await listing(suite, api, sizes)
            if sizes.distribution:
                note("distribution")
                rates = await distribution(
                    suite, api, workspace="fleet",
                    targets=[{"region": r} for r in managed_regions(sizes)],
                    clusters=sizes.managed, bound=5.0, runs=sizes.runs, cleanup=True,
                )  # fmt: skip
                await fanout(suite, fleet, rates, sizes.managed)
            note("status reads under churn")
            await status_under_churn(suite, api, fleet, sizes)
            # In the quick pass too: it is the only one that runs replicas sharing targets.
            note("distribution, 2 controller replicas")
            await replicated_distribution(suite, api, fleet, sizes, controller)
    finally:
        await fleet.stop()

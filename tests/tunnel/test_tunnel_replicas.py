"""Two API replicas (real `edge-platform serve` processes) behind a TCP balancer, as a Service
puts them: an agent's tunnel lands on one of them, the controller's calls on either (the other
forwards them by the registry in Redis). The replica holding the tunnel is killed: the agent
reconnects through the balancer to the other, and the controller follows without a restart."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from app.crypto import secret_box
from app.embedded import free_port
from app.tunnel.proxy import proxy_token
from tests.support.agents import AgentProcess, controller_for
from tests.support.edge import EdgeCluster, node
from tests.support.platform import (
    ADMIN_PASSWORD,
    ENCRYPTION_KEY,
    JWT_SECRET,
    authenticated,
    wait_for_body,
)
from tests.support.processes import clean_env

pytestmark = pytest.mark.slow

NAME = "factory-7"


class Replica:
    def __init__(self, settings: Settings, workdir: Path, index: int, *, workers: int = 1) -> None:
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"replica-{index}.log"
        self.env = clean_env(
            DATABASE_URL=settings.database_url or "",
            REDIS_URL=settings.redis_url or "",
            JWT_SECRET=JWT_SECRET,
            ENCRYPTION_KEY=ENCRYPTION_KEY,
            ADMIN_PASSWORD=ADMIN_PASSWORD,
            ALLOW_PRIVATE_CLUSTER_ENDPOINTS="true",
            TUNNEL_ADVERTISE_URL=self.url,
            LOG_LEVEL="info",
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1"]
        command += ["--workers", str(self.workers)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*command, "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # killed as a group: its workers with it
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"replica did not start:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL to the replica and, with --workers, to its worker processes (which a kill
        of the parent alone would leave running, holding their ports)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


class Balancer:
    """TCP connections to the first backend that accepts them, in order: a Service with the
    dead replica's endpoint removed."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Balancer:
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for port in self.backends:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                continue
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            return
        writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.close()


@contextlib.asynccontextmanager
async def replicas(settings: Settings, workdir: Path) -> AsyncIterator[list[Replica]]:
    started = [Replica(settings, workdir, i) for i in range(2)]
    try:
        for replica in started:
            await asyncio.to_thread(replica.start)
        yield started
    finally:
        for replica in started:
            replica.kill()


async def test_the_agent_moves_when_its_replica_dies_and_the_controller_follows(
    standalone_settings: Settings, tmp_path: Path
) -> None:
    edge = await EdgeCluster(nodes=[node("f7-1", zone="f7")], auto_ready=True).start()
    stop = asyncio.Event()
    agent: AgentProcess | None = None
    try:
        async with (
            replicas(standalone_settings, tmp_path) as (first, second),
            Balancer([first.port, second.port]) as balancer,
            httpx.AsyncClient(base_url=second.url, timeout=30) as client,
        ):
            await authenticated(client)
            await client.post("/api/v1/regions", json={"metadata": {"name": "east-china"}})
            cluster = {
                "metadata": {"name": NAME},
                "spec": {"region": "east-china", "connection": {"type": "agent"}},
            }
            assert (await client.post("/api/v1/clusters", json=cluster)).status_code == 201
            token = (await client.post(f"/api/v1/clusters/{NAME}/join-token")).json()["token"]
            agent = AgentProcess(tmp_path, NAME, balancer.url, edge)
            agent.start(token)  # lands on the first replica: the balancer's first choice
            # The controller talks to the second replica, which forwards to the first.
            settings = standalone_settings.model_copy(
                update={
                    "agent_proxy_url": second.url,
                    "cluster_probe_interval": 0.3,
                    "cluster_unreachable_after": 2.0,
                }
            )
            controller = await controller_for(settings)
            running = asyncio.create_task(controller.run(stop))
            path = f"/api/v1/clusters/{NAME}"
            body = await wait_for_body(client, path, lambda c: c["status"]["phase"] == "Ready", 45)
            since = body["status"]["agent"]["connectedSince"]

            first.kill()  # the replica holding the tunnel
            killed_at = time.monotonic()
            body = await wait_for_body(
                client,
                path,
                lambda c: (
                    c["status"]["agent"]["connectedSince"] not in (None, since)
                    and c["status"]["phase"] == "Ready"
                    and c["status"]["lastProbeTime"] is not None
                ),
                45,
            )
            moved_in = time.monotonic() - killed_at
            # Probed through the second replica's own tunnel now, and still Ready.
            probed = body["status"]["lastProbeTime"]
            await wait_for_body(client, path, lambda c: c["status"]["lastProbeTime"] != probed, 45)
            print(f"\nthe agent moved and its cluster was probed again {moved_in:.1f} s later")
            stop.set()
            await running
    finally:
        stop.set()
        if agent is not None:
            agent.stop()
        await edge.stop()


async def test_every_worker_of_one_replica_reaches_the_agent_another_worker_holds(
    standalone_settings: Settings, tmp_path: Path
) -> None:
    """`serve --workers 2`: the workers share one port, so the agent's tunnel is held by one of
    them and the controller's calls land on either; each must be answered through the tunnel
    (the other worker forwards to the holder's own port), none with 503."""
    edge = await EdgeCluster(nodes=[node("f7-1", zone="f7")], auto_ready=True).start()
    replica = Replica(standalone_settings, tmp_path, 0, workers=2)
    agent: AgentProcess | None = None
    try:
        await asyncio.to_thread(replica.start)
        async with httpx.AsyncClient(base_url=replica.url, timeout=30) as client:
            await authenticated(client)
            await client.post("/api/v1/regions", json={"metadata": {"name": "east-china"}})
            cluster = {
                "metadata": {"name": NAME},
                "spec": {"region": "east-china", "connection": {"type": "agent"}},
            }
            created = await client.post("/api/v1/clusters", json=cluster)
            uid = created.json()["metadata"]["uid"]
            token = (await client.post(f"/api/v1/clusters/{NAME}/join-token")).json()["token"]
            agent = AgentProcess(tmp_path, NAME, replica.url, edge)
            agent.start(token)
            await wait_for_body(
                client, f"/api/v1/clusters/{NAME}", lambda c: c["status"]["agent"]["connected"], 45
            )

            relay_token = proxy_token(secret_box(standalone_settings))
            headers = {"Authorization": f"Bearer {relay_token}"}
            statuses = []
            for _ in range(3):  # new connections each round: the kernel spreads them over both
                async with httpx.AsyncClient(base_url=replica.url, timeout=30) as caller:
                    answers = await asyncio.gather(
                        *(
                            caller.get(f"/internal/tunnel/{uid}/version", headers=headers)
                            for _ in range(20)
                        )
                    )
                statuses += [answer.status_code for answer in answers]
                assert all(
                    answer.json().get("gitVersion")
                    for answer in answers
                    if answer.status_code == 200
                )
            assert statuses == [200] * 60, statuses
    finally:
        if agent is not None:
            agent.stop()
        replica.kill()
        await edge.stop()

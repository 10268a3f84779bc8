"""An API process killed (-9) while a create is in flight: the write is all or nothing, and
the client's retry with the same Idempotency-Key leaves exactly one object, however far the
first attempt got."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from app.embedded import free_port
from tests.support.platform import ADMIN_PASSWORD, ENCRYPTION_KEY, JWT_SECRET
from tests.support.processes import clean_env
from tests.support.services import RedisProcess

pytestmark = pytest.mark.slow

# Seconds into the request: from before it is read to after it is answered, through the
# windows between (written but not yet answered).
KILL_AFTER = (0.0, 0.005, 0.02, 0.05, 0.08, 0.12, 0.2, 1.0)


class ApiProcess:
    def __init__(self, database_url: str, redis_url: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = clean_env(
            DATABASE_URL=database_url, REDIS_URL=redis_url, JWT_SECRET=JWT_SECRET,
            ENCRYPTION_KEY=ENCRYPTION_KEY, ADMIN_PASSWORD=ADMIN_PASSWORD, LOG_LEVEL="warning",
        )  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1",
             "--port", str(self.port)],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("the API did not become ready")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)


@pytest.fixture
def api(clean_database: str, redis_server: RedisProcess) -> Iterator[ApiProcess]:
    server = ApiProcess(clean_database, redis_server.url)
    server.start()
    yield server
    if server.process is not None and server.process.poll() is None:
        server.kill()


def test_killed_mid_create_then_retried_gives_exactly_one(api: ApiProcess) -> None:
    token = httpx.post(
        f"{api.url}/oauth/token",
        data={"grant_type": "password", "username": "admin", "password": ADMIN_PASSWORD,
              "client_id": "edge-console"},
    ).json()["access_token"]  # fmt: skip
    auth = {"Authorization": f"Bearer {token}"}
    outcomes = []
    for attempt, delay in enumerate(KILL_AFTER):
        name = f"killed-{attempt}"
        headers = auth | {"Idempotency-Key": f"create-{name}"}
        body = {"metadata": {"name": name}, "spec": {"displayName": name}}
        first: list[int] = []

        def send(
            body: dict[str, object] = body,
            headers: dict[str, str] = headers,
            first: list[int] = first,
        ) -> None:
            try:
                response = httpx.post(
                    f"{api.url}/api/v1/regions", json=body, headers=headers, timeout=10
                )
                first.append(response.status_code)
            except httpx.HTTPError:
                first.append(0)  # cut off: the client cannot know whether it was written

        sender = threading.Thread(target=send)
        sender.start()
        time.sleep(delay)
        api.kill()
        sender.join()
        api.start()

        retry = httpx.post(f"{api.url}/api/v1/regions", json=body, headers=headers, timeout=10)
        assert retry.status_code == 201, retry.text
        outcomes.append((first[0], retry.headers.get("idempotent-replayed") == "true"))
        if first[0] == 201:
            assert retry.headers.get("idempotent-replayed") == "true"
        listed = httpx.get(f"{api.url}/api/v1/regions", headers=auth).json()["items"]
        assert [i["metadata"]["name"] for i in listed].count(name) == 1
        audit = httpx.get(
            f"{api.url}/api/v1/auditlogs", params={"actor": "admin", "limit": 1000}, headers=auth
        ).json()["items"]
        creates = [e for e in audit if e["resourceName"] == name and e["outcome"] == 201]
        assert len(creates) == 1, creates  # one write, recorded once: nothing half-done
    assert (201, True) in outcomes  # the last attempt, answered before the kill, was replayed
    print(f"\nfirst answer, retry replayed: {outcomes}")

"""Two `edge-platform controller` processes: one leads; kill, stop or freeze it (SIGSTOP) and the
other takes over."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from app.embedded import free_port
from tests.support.platform import ENCRYPTION_KEY
from tests.support.processes import clean_env
from tests.support.services import RedisProcess

pytestmark = pytest.mark.slow

LEASE = 3.0


def leading(metrics_port: int) -> bool | None:
    try:
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None
    match = re.search(r"^edge_controller_is_leader (\S+)$", text, re.MULTILINE)
    return match is not None and float(match.group(1)) == 1.0


@pytest.fixture
def controllers(
    clean_database: str, redis_server: RedisProcess
) -> Iterator[list[tuple[subprocess.Popen[str], int, int]]]:
    started = []
    for _ in range(2):
        metrics, health = free_port(), free_port()
        env = clean_env(
            DATABASE_URL=clean_database,
            REDIS_URL=redis_server.url,
            ENCRYPTION_KEY=ENCRYPTION_KEY,
            API_SERVER_ARGS=(
                f"--leader-elect --leader-elect-lease-duration={LEASE}s "
                "--leader-elect-renew-deadline=2s --leader-elect-retry-period=500ms "
                f"--metrics-bind-address=127.0.0.1:{metrics} "
                f"--health-probe-bind-address=127.0.0.1:{health}"
            ),
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "controller"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        started.append((process, metrics, health))
    yield started
    for process, _, _ in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


def wait_for_leaders(ports: list[int], expected: int, within: float) -> list[bool | None]:
    deadline = time.monotonic() + within
    states: list[bool | None] = []
    while time.monotonic() < deadline:
        states = [leading(port) for port in ports]
        if states.count(True) == expected and None not in states:
            return states
        time.sleep(0.2)
    raise AssertionError(f"leader states {states}")


def test_one_leads_and_a_killed_leader_is_replaced_within_the_lease(
    controllers: list[tuple[subprocess.Popen[str], int, int]],
) -> None:
    ports = [metrics for _, metrics, _ in controllers]
    states = wait_for_leaders(ports, expected=1, within=30)
    for _, _, health in controllers:
        assert httpx.get(f"http://127.0.0.1:{health}/readyz").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{health}/metrics").status_code == 404
    leader = states.index(True)
    other = 1 - leader
    controllers[leader][0].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    deadline = killed_at + LEASE + 3
    while time.monotonic() < deadline and not leading(ports[other]):
        time.sleep(0.1)
    assert leading(ports[other]), "the standby did not take over"
    assert time.monotonic() - killed_at <= LEASE + 3


def test_sigterm_releases_the_lease_at_once(
    controllers: list[tuple[subprocess.Popen[str], int, int]],
) -> None:
    ports = [metrics for _, metrics, _ in controllers]
    leader = wait_for_leaders(ports, expected=1, within=30).index(True)
    process = controllers[leader][0]
    process.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    process.wait(timeout=30)
    assert process.returncode == 0
    other = ports[1 - leader]
    while time.monotonic() - stopped_at < LEASE and not leading(other):
        time.sleep(0.1)
    assert leading(other)
    assert time.monotonic() - stopped_at < LEASE  # no wait for the lease to expire


def epoch_of(metrics_port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).text
    match = re.search(r"^edge_controller_leader_epoch (\S+)$", text, re.MULTILINE)
    assert match is not None
    return float(match.group(1))


def test_a_frozen_leader_is_replaced_and_yields_when_it_thaws(
    controllers: list[tuple[subprocess.Popen[str], int, int]],
) -> None:
    ports = [metrics for _, metrics, _ in controllers]
    leader = wait_for_leaders(ports, expected=1, within=30).index(True)
    frozen, other = controllers[leader][0], ports[1 - leader]
    frozen.send_signal(signal.SIGSTOP)  # a VM pause or a GC stall longer than the lease
    stopped_at = time.monotonic()
    try:
        while time.monotonic() - stopped_at < LEASE + 3 and not leading(other):
            time.sleep(0.1)
        assert leading(other), "the standby did not take over from the frozen leader"
    finally:
        frozen.send_signal(signal.SIGCONT)
    # Thawed, the old leader finds its lease taken and steps down; its fencing epoch is stale,
    # so a leader-only write it had in flight is refused (tests/controller/test_leader.py).
    states = wait_for_leaders(ports, expected=1, within=LEASE + 3)
    assert states[1 - leader] is True
    assert epoch_of(other) > epoch_of(ports[leader])
    time.sleep(LEASE)  # and it stays that way: no flapping back
    assert [leading(port) for port in ports].count(True) == 1
    assert leading(other)

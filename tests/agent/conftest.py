"""Fixtures of the agent's tests: an emulated edge cluster, a test platform, and settings that
point an agent at both (short backoff, so that reconnections are quick)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.agent.settings import AgentSettings, JoinTokenSource
from tests.agent.support import RecordingEdge, TestPlatform
from tests.support.edge import node

PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "WSS_PROXY", "WS_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def no_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent honours the proxy variables on its way to the platform: a machine that has
    them set must not send the tests' loopback connections there."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture(autouse=True)
def no_lost_task_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """asyncio's complaints (a task's exception never retrieved, a task destroyed pending)
    mean the agent lost track of work: they fail the test."""
    yield
    complaints = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert complaints == []


@pytest.fixture
async def edge() -> AsyncIterator[RecordingEdge]:
    cluster = RecordingEdge(nodes=[node("edge-1", zone="z1"), node("edge-2", zone="z1")])
    await cluster.start()
    yield cluster
    await cluster.stop()


@pytest.fixture
async def platform() -> AsyncIterator[TestPlatform]:
    server = await TestPlatform().start()
    yield server
    await server.stop()


@pytest.fixture
def kubeconfig(tmp_path: Path, edge: RecordingEdge) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(edge.kubeconfig("edge-test-token"))
    return path


@pytest.fixture
def settings_for(
    tmp_path: Path, platform: TestPlatform, kubeconfig: Path
) -> Callable[..., AgentSettings]:
    """Settings for an agent of cluster edge-1 (a fresh join token unless one is given)."""

    def make(**overrides: Any) -> AgentSettings:
        values: dict[str, Any] = {
            "platform_url": platform.url,
            "join_token": JoinTokenSource(value=platform.issue_token("edge-1")),
            "kubeconfig": str(kubeconfig),
            "state_file": tmp_path / "state" / "credential.json",
            "reconnect_base_seconds": 0.05,
            "reconnect_max_seconds": 0.5,
        }
        values.update(overrides)
        return AgentSettings(**values)

    return make

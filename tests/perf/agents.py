"""Many edge agents in one process, for benchmarks: one real agent per cluster — the code of
`edge-platform agent` (`app.agent.run.run_agent`: join with the token when no credential is
kept, the credential kept in a file, the WebSocket of `app.agent.tunnel`, the `Mux` of the
wire protocol, `app.agent.exchange` answering against the cluster's API server, reconnection
with the agent's capped exponential backoff and full jitter) — each as a task of its own
instead of a process of its own: a Python process per cluster is too heavy for a thousand
clusters on two cores, and what the benchmarks measure is the platform's end.

Each agent's cluster is one of the fleet emulator's (`tests/perf/fleet.py`), reached with its
kubeconfig over HTTPS as a real agent outside a pod reaches its API server; its credential is
kept in `<state>/<name>.credential.json`, so the agents started again later (a new process,
the same state folder) connect with the credentials they joined with, as restarted agents do.

    python -m tests.perf.agents --spec SPEC.json --state DIR [--ramp SECONDS]

SPEC.json: {"platform": URL, "agents": [{"name", "kubeconfig", "token" (or null)}, …]}.
Runs until SIGTERM or SIGINT, then closes every connection as the agent does when stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from app.agent.run import run_agent
from app.agent.settings import AgentSettings, JoinTokenSource
from tests.perf.harness import spawn, stop


def agent_settings(platform: str, entry: dict[str, Any], state: Path) -> AgentSettings:
    """The settings `edge-platform agent --platform-url … --token … --kubeconfig …
    --state-file …` would give (the agent's default timings)."""
    name = entry["name"]
    kubeconfig = state / f"{name}.kubeconfig"
    kubeconfig.write_text(entry["kubeconfig"])
    token = entry.get("token")
    return AgentSettings(
        platform_url=platform,
        join_token=JoinTokenSource(value=token) if token else JoinTokenSource(),
        kubeconfig=str(kubeconfig),
        state_file=state / f"{name}.credential.json",
        log_level="warning",
    )


async def serve(every: list[AgentSettings], ramp: float = 0.0) -> None:
    """Run an agent for each settings until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    waiting = asyncio.create_task(stopping.wait())
    orphaned = asyncio.create_task(_parent_gone(stopping))
    tasks = []
    for settings in every:  # all at once, or evenly over `ramp` seconds
        if stopping.is_set():
            break
        tasks.append(asyncio.create_task(run_agent(settings)))
        if ramp:
            await asyncio.sleep(ramp / len(every))
    done, _ = await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED)
    orphaned.cancel()
    for task in tasks:  # each closes its WebSocket ("the agent is stopping")
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    failed = [r for r in results if not isinstance(r, asyncio.CancelledError | type(None))]
    if waiting not in done or failed:  # an agent gave up: a configuration error
        raise SystemExit(f"agents failed: {failed[:3]}")


async def _parent_gone(stopping: asyncio.Event) -> None:
    """Stop when the benchmark that started this process is gone (killed, or failed before
    stopping it): agents left running would keep connecting to whatever listens there."""
    parent = os.getppid()
    while True:
        await asyncio.sleep(1.0)
        if os.getppid() != parent:
            stopping.set()
            return


class Agents:
    """A process of `len(agents)` agents, run by the benchmark (`start`, `stop`)."""

    def __init__(self, platform: str, agents: list[dict[str, Any]], state: Path, *,
                 ramp: float = 0.0) -> None:  # fmt: skip
        self.platform = platform
        self.agents = agents
        self.state = state
        self.ramp = ramp  # seconds over which the agents are started, evenly; 0: all at once
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self) -> Agents:
        """Start the agents (once joined, the tokens are used up: the credentials kept in
        `state` are used, as a restarted agent uses its own)."""
        self.state.mkdir(mode=0o700, parents=True, exist_ok=True)
        spec = self.state / "spec.json"
        spec.write_text(json.dumps({"platform": self.platform, "agents": self.agents}))
        spec.chmod(0o600)
        self._process = spawn([sys.executable, "-m", "tests.perf.agents", "--spec", str(spec),
                               "--state", str(self.state), "--ramp", str(self.ramp)],
                              dict(os.environ), "agents")  # fmt: skip
        return self

    def stop(self) -> None:
        if self._process is not None:
            stop(self._process)
            self._process = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.agents")
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--ramp", type=float, default=0.0, help="start the agents over this")
    options = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    spec = json.loads(options.spec.read_text())
    # Two sockets per agent (the platform, its API server): the soft limit of open files up to
    # the hard one, as the fleet emulator does.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    options.state.mkdir(mode=0o700, parents=True, exist_ok=True)
    every = [agent_settings(spec["platform"], entry, options.state) for entry in spec["agents"]]
    asyncio.run(serve(every, options.ramp))


if __name__ == "__main__":
    main()

"""`edge-platform agent` processes for emulated clusters, and a controller to dispatch to them."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from app.config import Settings
from app.controller.runner import Controller
from app.crypto import secret_box
from tests.support.edge import EdgeCluster
from tests.support.processes import clean_env


class AgentProcess:
    """`edge-platform agent` for one emulated cluster, as an operator would run it outside a
    pod: the platform's URL, a join token, the cluster's kubeconfig, a state file."""

    def __init__(self, workdir: Path, name: str, platform_url: str, edge: EdgeCluster) -> None:
        self.name = name
        self.kubeconfig = workdir / f"{name}.kubeconfig"
        self.kubeconfig.write_text(edge.kubeconfig(token=f"{name}-local-token"))
        self.state_file = workdir / f"{name}.credential.json"
        self.log = workdir / f"{name}.agent.log"
        self.platform_url = platform_url
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, token: str) -> None:
        command = [sys.executable, "-m", "app.cli", "agent", "--log-level", "debug"]
        command += ["--platform-url", self.platform_url, "--token", token]
        command += ["--kubeconfig", str(self.kubeconfig), "--state-file", str(self.state_file)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, env=clean_env(), stdout=log, stderr=subprocess.STDOUT
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


async def controller_for(settings: Settings) -> Controller:
    from app.cache import ObjectCache
    from app.db.engine import create_engine, create_sessionmaker
    from app.redis import RedisGateway

    engine = create_engine(settings)
    redis = RedisGateway(url=settings.redis_url)
    return Controller(
        settings, create_sessionmaker(engine), redis, ObjectCache(redis), secret_box(settings)
    )

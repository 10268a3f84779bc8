"""`edge-platform` run as real processes: a clean environment, the CLI, readiness, output."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time

import httpx

SETTING_NAMES = ("DATABASE_URL", "REDIS_URL", "REDIS_ADDRESSES", "EDGE_MODE", "JWT_SECRET",
                 "ENCRYPTION_KEY", "API_SERVER_ARGS", "EDGE_STATE_DIR")  # fmt: skip


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True, text=True, timeout=120, env=env or clean_env(),
    )  # fmt: skip


def wait_ready(url: str, process: subprocess.Popen[str], timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise AssertionError(
                f"process exited early:\n{process.stdout.read() if process.stdout else ''}"
            )
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready within {timeout}s")


class Output:
    """Collects a process's output lines while it runs."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert process.stdout is not None
        stream = process.stdout
        self._thread = threading.Thread(target=lambda: self.lines.extend(stream), daemon=True)
        self._thread.start()

    def wait_for(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if match := re.search(pattern, line):
                    return match
            time.sleep(0.1)
        raise AssertionError(f"{pattern!r} not printed:\n{''.join(self.lines)}")

    def text(self) -> str:
        self._thread.join(timeout=30)
        return "".join(self.lines)

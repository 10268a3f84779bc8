"""The console's forwarding secret as the commands set it up: `dev` makes one that its API and
console share, and a production console refuses to start without one."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.embedded import free_port
from tests.support.processes import Output, clean_env, run_cli, wait_ready

SESSION_SECRET = "production-console-session-secret-0123456789"


def test_a_production_console_needs_its_forwarding_secret() -> None:
    result = run_cli(
        "console", env=clean_env(EDGE_MODE="production", CONSOLE_SESSION_SECRET=SESSION_SECRET)
    )
    assert result.returncode == 2
    assert "CONSOLE_FORWARDING_SECRET must be set in production mode" in result.stderr
    result = run_cli(
        "console",
        env=clean_env(EDGE_MODE="production", CONSOLE_SESSION_SECRET=SESSION_SECRET,
                      CONSOLE_FORWARDING_SECRET="changeme"),
    )  # fmt: skip
    assert result.returncode == 2
    assert "CONSOLE_FORWARDING_SECRET is the documented placeholder" in result.stderr


@pytest.mark.slow
def test_dev_audits_console_sign_ins_under_the_browsers_address(
    workdir: Path,
    process_cleanup: list[subprocess.Popen[str]],
) -> None:
    state = workdir / f"dev-state-{time.monotonic_ns()}"
    port, console_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "dev", "--port", str(port),
         "--console-port", str(console_port), "--state-dir", str(state)],
        # httpx, unlike browsers, sends no Secure cookie to http://127.0.0.1.
        env=clean_env(CONSOLE_COOKIE_SECURE="false"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    process_cleanup.append(process)
    output = Output(process)
    base, console = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{console_port}"
    wait_ready(f"{base}/readyz", process, 60)
    wait_ready(f"{console}/healthz", process, 30)
    password = output.wait_for(r"sign in: +user admin, password (\S+)").group(1)

    # A browser on another address than the console's signs in with a wrong password.
    browser = httpx.Client(
        base_url=console, transport=httpx.HTTPTransport(local_address="127.0.0.2")
    )
    with browser:
        form = browser.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]*)"', form.text)
        assert csrf, form.text
        refused = browser.post(
            "/login", data={"csrf": csrf.group(1), "username": "mallory", "password": "guess"}
        )
        assert refused.status_code == 401

    token = httpx.post(
        f"{base}/oauth/token",
        data={"grant_type": "password", "username": "admin", "password": password,
              "client_id": "edge-console"},
    ).json()["access_token"]  # fmt: skip
    entries = httpx.get(
        f"{base}/api/v1/auditlogs",
        params={"actor": "mallory"},
        headers={"Authorization": f"Bearer {token}"},
    ).json()["items"]
    assert [(e["action"], e["outcome"], e["sourceIP"]) for e in entries] == [
        ("login", 401, "127.0.0.2")
    ]
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    assert process.returncode == 0

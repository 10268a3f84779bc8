"""The `edge-platform` command, run as a real process."""

from __future__ import annotations

import getpass
import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from app.embedded import free_port
from tests.support.processes import Output, clean_env, run_cli, wait_ready
from tests.support.services import RedisProcess


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["serve"],
        ["migrate"],
        ["dev"],
        ["version"],
        ["rotate-key"],
        ["controller"],
        ["console"],
        ["charts", "load"],
    ],
)
def test_help(command: list[str]) -> None:
    result = run_cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: edge-platform" in result.stdout


def test_serve_help_lists_the_guide_flags() -> None:
    text = run_cli("serve", "--help").stdout
    for flag in ("--log-level", "--metrics-bind-address", "--health-probe-bind-address",
                 "--leader-elect", "--leader-elect-lease-duration", "--leader-elect-renew-deadline",
                 "--leader-elect-retry-period", "--workers"):  # fmt: skip
        assert flag in text


def test_production_refuses_the_guide_placeholders() -> None:
    env = clean_env(
        EDGE_MODE="production",
        JWT_SECRET="your-jwt-secret-key",
        DATABASE_URL="postgres://edge_platform:password@127.0.0.1:1/edge_platform",
        REDIS_ADDRESSES="127.0.0.1:1",
    )
    result = run_cli("serve", env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "JWT_SECRET" in lines[0]
    assert "placeholder" in lines[0]


def test_serve_without_a_signing_secret_says_so() -> None:
    env = clean_env(DATABASE_URL="postgres://edge@127.0.0.1:1/edge")
    result = run_cli("serve", env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "edge-platform: configuration error: JWT_SECRET must be set (or JWT_PRIVATE_KEY_FILE)"
    ]


def test_console_in_production_needs_its_session_secret() -> None:
    result = run_cli("console", env=clean_env(EDGE_MODE="production"))
    assert result.returncode == 2
    assert "CONSOLE_SESSION_SECRET must be set in production mode" in result.stderr


def test_console_serves_its_pages_on_its_own() -> None:
    """`edge-platform console` as its own process: it needs no database or Redis, only the
    API's address (here nothing listens there: its pages say so, the process stays up)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "console", "--host", "127.0.0.1", "--port", str(port),
         "--api-url", "http://127.0.0.1:9"],
        env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        login = httpx.get(f"http://127.0.0.1:{port}/login", timeout=5)
        assert login.status_code == 200
        assert "Sign in" in login.text
        assert httpx.get(f"http://127.0.0.1:{port}/fleet", timeout=5).status_code == 303
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)  # a stop does not hang
    # uvicorn re-raises the signal once it has shut down gracefully.
    assert process.returncode in (0, -signal.SIGTERM)


def test_version() -> None:
    assert run_cli("version").stdout.startswith("edge-platform ")


def test_serve_with_the_guide_api_server_args(
    clean_database: str,
    redis_server: RedisProcess,
    process_cleanup: list[subprocess.Popen[str]],
) -> None:
    api_port, metrics_port, health_port = free_port(), free_port(), free_port()
    args = f"""
      --log-level=info
      --metrics-bind-address=127.0.0.1:{metrics_port}
      --health-probe-bind-address=127.0.0.1:{health_port}
      --leader-elect
      --leader-elect-lease-duration=15s
      --leader-elect-renew-deadline=10s
      --leader-elect-retry-period=2s
    """
    env = clean_env(
        DATABASE_URL=clean_database,
        REDIS_URL=redis_server.url,
        API_SERVER_ARGS=args,
        JWT_SECRET="x" * 40,
        ENCRYPTION_KEY="y" * 40,
        ADMIN_PASSWORD="cli-test-admin-password",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(api_port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    process_cleanup.append(process)
    wait_ready(f"http://127.0.0.1:{api_port}/readyz", process, 30)
    assert httpx.get(f"http://127.0.0.1:{health_port}/readyz").status_code == 200
    assert httpx.get(f"http://127.0.0.1:{health_port}/metrics").status_code == 404
    metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert metrics.status_code == 200
    assert "edge_http_requests_total" in metrics.text
    assert httpx.get(f"http://127.0.0.1:{metrics_port}/api/v1/regions").status_code == 404

    secret_query = "/api/v1/regions?token=s3cr3t-in-query"
    assert httpx.get(f"http://127.0.0.1:{api_port}{secret_query}").status_code == 401

    # An event stream is open when the stop comes: it ends, it does not hold the stop up.
    base = f"http://127.0.0.1:{api_port}"
    signed_in = httpx.post(
        f"{base}/oauth/token",
        data={"grant_type": "password", "username": "admin", "client_id": "edge-console",
              "password": "cli-test-admin-password"},
    )  # fmt: skip
    assert signed_in.status_code == 200, signed_in.text
    token = signed_in.json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    made = httpx.post(f"{base}/api/v1/workspaces", json={"metadata": {"name": "w"}}, headers=auth)
    assert made.status_code == 201
    ended: list[str] = []

    def watch() -> None:
        headers = auth | {"Accept": "text/event-stream"}
        with httpx.stream("GET", f"{base}/api/v1/workspaces/w/events", headers=headers) as r:
            ended.extend(r.iter_lines())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    time.sleep(1.0)
    stopped_at = time.monotonic()
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert time.monotonic() - stopped_at < 8  # well before the 10 s cut-off
    watcher.join(timeout=5)
    assert any("resume with Last-Event-ID" in line for line in ended), ended
    assert '"route": "/api/v1/regions"' in output  # JSON access log with the route template
    assert "s3cr3t" not in output  # query strings are never logged


@pytest.mark.slow
def test_serve_with_workers_logs_json_at_the_configured_level(
    clean_database: str,
    redis_server: RedisProcess,
    process_cleanup: list[subprocess.Popen[str]],
) -> None:
    """Each worker of `serve --workers N` is a fresh process: it logs as the parent does (JSON
    lines, the access log at info), not with Python's default of plain text at warning."""
    port = free_port()
    env = clean_env(
        DATABASE_URL=clean_database, REDIS_URL=redis_server.url, LOG_LEVEL="info",
        JWT_SECRET="x" * 40, ENCRYPTION_KEY="y" * 40,
    )  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    process_cleanup.append(process)
    wait_ready(f"http://127.0.0.1:{port}/readyz", process, 30)
    for _ in range(4):  # to either worker
        answer = httpx.get(f"http://127.0.0.1:{port}/api/v1/regions?token=s3cr3t-in-query")
        assert answer.status_code == 401
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    access = [r for r in records if r.get("route") == "/api/v1/regions"]
    assert len(access) == 4, output
    assert {r["status"] for r in access} == {401}
    assert "s3cr3t" not in output


@pytest.mark.slow
def test_dev_starts_on_the_embedded_default_and_keeps_data(
    workdir: Path, process_cleanup: list[subprocess.Popen[str]]
) -> None:
    """The README's run command on a machine with nothing configured."""
    state = workdir / f"dev-state-{time.monotonic_ns()}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    def start() -> tuple[subprocess.Popen[str], Output]:
        command = ["dev", "--port", str(port), "--state-dir", str(state)]
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", *command],
            env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        process_cleanup.append(process)
        return process, Output(process)

    process, output = start()
    took = wait_ready(f"{base}/readyz", process, 30)
    assert httpx.get(f"{base}/readyz").json()["status"] == "ok"
    password = output.wait_for(r"sign in: +user admin, password (\S+)").group(1)
    token = httpx.post(
        f"{base}/oauth/token",
        data={"grant_type": "password", "username": "admin", "password": password,
              "client_id": "edge-console"},
    ).json()["access_token"]  # fmt: skip
    auth = {"Authorization": f"Bearer {token}"}
    created = httpx.post(
        f"{base}/api/v1/regions",
        content="metadata: {name: east-china}\nspec: {displayName: East China}\n",
        headers={"content-type": "application/yaml", **auth},
    )
    assert created.status_code == 201, created.text
    process.send_signal(signal.SIGINT)  # Ctrl-C
    process.wait(timeout=60)
    text = output.text()
    assert process.returncode in (0, 130), text
    assert f"{base}/api/v1" in text
    assert not (state / "postgres" / "postmaster.pid").exists(), "embedded PostgreSQL left running"
    # The generated password is shown on the terminal, last, never in a log line; the state
    # folder keeps it for the next start.
    assert sum(password in line for line in text.splitlines()) == 1
    assert not any(password in line for line in text.splitlines() if line.startswith("{"))
    assert (state / "initial-admin-password").read_text().strip() == password

    process, output = start()
    wait_ready(f"{base}/readyz", process, 30)
    kept = httpx.get(f"{base}/api/v1/regions/east-china", headers=auth)
    assert kept.status_code == 200
    assert kept.json()["spec"]["displayName"] == "East China"
    # Changed, the password is no longer shown; the way to reset it is.
    changed = httpx.patch(
        f"{base}/api/v1/users/me",
        json={"spec": {"password": "a-new-secret-9", "oldPassword": password}},
        headers={"content-type": "application/merge-patch+json", **auth},
    )
    assert changed.status_code == 200, changed.text
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    assert process.returncode == 0
    process, output = start()
    wait_ready(f"{base}/readyz", process, 30)
    output.wait_for(r"password was changed since it was first set; forgotten\? "
                    r"`edge-platform users reset-password admin`")  # fmt: skip
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    assert password not in output.text()

    # Forgotten: reset at the machine (dev stopped: it owns the state folder).
    reset = subprocess.run(
        [sys.executable, "-m", "app.cli", "users", "reset-password", "admin",
         "--state-dir", str(state)],
        env=clean_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert reset.returncode == 0, reset.stderr
    new = re.search(r"new password of 'admin': (\S+)", reset.stdout)
    assert new is not None, reset.stdout
    process, output = start()
    wait_ready(f"{base}/readyz", process, 30)
    # The state folder keeps the new one: shown at start again.
    assert output.wait_for(r"sign in: +user admin, password (\S+)").group(1) == new.group(1)
    signed_in = httpx.post(
        f"{base}/oauth/token",
        data={"grant_type": "password", "username": "admin", "password": new.group(1),
              "client_id": "edge-console"},
    )  # fmt: skip
    assert signed_in.status_code == 200, signed_in.text
    audit = httpx.get(
        f"{base}/api/v1/auditlogs",
        params={"actor": f"cli:{getpass.getuser()}"},
        headers={"Authorization": f"Bearer {signed_in.json()['access_token']}"},
    )
    assert audit.status_code == 200, audit.text
    assert [(e["action"], e["resourceName"]) for e in audit.json()["items"]] == [
        ("reset-password", "admin")
    ]
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    assert took < 30

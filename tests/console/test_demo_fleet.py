"""The first hour, as the README's first screen tells it: `edge-platform dev --demo`, then the
guide's cross-region rollout, Ready on the demo fleet within a minute; the console says which
clusters are emulated; one command removes them."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from app.config import Settings
from app.embedded import free_port
from tests.support.browser import find, shot, sign_in, wait
from tests.support.platform import authenticated
from tests.support.processes import Output, clean_env, wait_ready

pytestmark = pytest.mark.slow

CLUSTERS = {"shanghai-cluster", "hangzhou-cluster", "beijing-cluster", "tianjin-cluster",
            "shenzhen-cluster"}  # fmt: skip
ROLLOUT = "/api/v1/workspaces/team-a/applicationdeployments"
README = Path(__file__).parents[2] / "README.md"


def readme_rollout() -> str:
    """The rollout's YAML as the README's first screen prints it (a here-document)."""
    text = README.read_text()
    section = text[text.index("## A cross-region rollout in a minute") :]
    body = section[section.index("<<'YAML'\n") + len("<<'YAML'\n") : section.index("\n    YAML\n")]
    return textwrap.dedent(body) + "\n"


async def test_dev_demo_takes_the_guides_rollout_and_is_removed_with_one_command(
    standalone_settings: Settings,
    workdir: Path,
    process_cleanup: list[subprocess.Popen[str]],
    browser: webdriver.Chrome,
) -> None:
    port, console_port, demo_port = free_port(), free_port(), free_port()
    api, console = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{console_port}"
    env = clean_env(
        DATABASE_URL=standalone_settings.database_url,
        REDIS_URL=str(standalone_settings.redis_url),
    )
    started = time.monotonic()
    process = subprocess.Popen(  # noqa: ASYNC220 - started once; Output reads it on a thread
        [sys.executable, "-m", "app.cli", "dev", "--demo", "--port", str(port),
         "--console-port", str(console_port), "--demo-port", str(demo_port),
         "--state-dir", str(workdir / f"demo-{time.monotonic_ns()}")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    process_cleanup.append(process)
    output = Output(process)
    wait_ready(f"{api}/readyz", process, 60)
    password = output.wait_for(r"sign in: +user admin, password (\S+)").group(1)
    output.wait_for(r"demo: +5 emulated edge clusters at https://127\.0\.0\.1:\d+ \(created")

    async with httpx.AsyncClient(base_url=api, timeout=30) as client:
        await authenticated(client, "admin", password)
        while True:  # the first probes: a few seconds
            listed = (await client.get("/api/v1/clusters")).json()["items"]
            phases = {c["metadata"]["name"]: c["status"]["phase"] for c in listed}
            if phases == dict.fromkeys(CLUSTERS, "Ready"):
                break
            assert time.monotonic() - started < 60, phases
            await asyncio.sleep(0.5)

        # The README's rollout, its YAML as printed there.
        created = await client.post(
            ROLLOUT, content=readme_rollout(), headers={"content-type": "application/yaml"}
        )
        assert created.status_code == 201, created.text
        phases_seen = set()
        while True:
            status = (await client.get(f"{ROLLOUT}/cross-region-app")).json()["status"]
            phases_seen.add(status["phase"])
            if status["phase"] == "Ready":
                break
            assert time.monotonic() - started < 90, status
            await asyncio.sleep(0.5)
        # The emulated edges took a while to report ready, as real ones do.
        assert "Progressing" in phases_seen
        rows = {row["cluster"]: row for row in status["targets"]}
        assert set(rows) == CLUSTERS - {"tianjin-cluster"}
        assert rows["beijing-cluster"]["desiredReplicas"] == 3
        assert rows["beijing-cluster"]["readyReplicas"] == 3
        print(f"\nthe guide's rollout Ready {time.monotonic() - started:.1f}s after the command")

    def look_at_the_fleet() -> None:
        sign_in(browser, console, "admin", password)
        banner = find(browser, "#demo-banner").text
        assert "5 of these clusters are emulated" in banner
        assert "edge-platform demo-fleet --remove" in banner
        chips = browser.find_elements(By.CSS_SELECTOR, ".tile .chip.demo")
        assert len(chips) == 5
        shot(browser, "demo-fleet")
        browser.get(f"{console}/w/team-a/deployments/cross-region-app")
        wait(browser, lambda d: "Ready" in find(d, "main").text)

    await asyncio.to_thread(look_at_the_fleet)

    removed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app.cli", "demo-fleet", "--remove", "--api-url", api],
        env={**env, "ADMIN_PASSWORD": password}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert "applicationdeployment team-a/cross-region-app" in removed.stdout
    assert "cluster shanghai-cluster" in removed.stdout
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:
        await authenticated(client, "admin", password)
        assert (await client.get("/api/v1/clusters")).json()["items"] == []
        assert (await client.get("/api/v1/regions")).json()["items"] == []
    process.terminate()
    process.wait(timeout=60)

"""A real Prometheus and promtool (Debian's package; scripts/run-tests unpacks it into
.venv/prometheus when they are not on PATH)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from app.embedded import free_port

UNPACKED = Path(__file__).parents[2] / ".venv" / "prometheus" / "usr" / "bin"


def binary(name: str) -> str:
    found = shutil.which(name) or (str(UNPACKED / name) if (UNPACKED / name).exists() else None)
    assert found, f"{name} is needed: run ./scripts/run-tests, or apt-get install prometheus"
    return found


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool"), *args], capture_output=True, text=True, timeout=60, check=False
    )


@contextlib.asynccontextmanager
async def prometheus(
    workdir: Path,
    targets: list[str],
    rule_files: list[Path] = (),  # type: ignore[assignment]
) -> AsyncIterator[httpx.AsyncClient]:
    """Prometheus scraping `targets` (host:port, path /metrics) every second and evaluating
    `rule_files`; yields a client of its HTTP API."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [{"job_name": "edge-platform", "static_configs": [{"targets": targets}]}],
    }
    config_file = workdir / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    log = (workdir / "prometheus.log").open("w")
    process = await asyncio.create_subprocess_exec(
        binary("prometheus"),
        f"--config.file={config_file}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            for _ in range(200):
                assert process.returncode is None, (workdir / "prometheus.log").read_text()
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/-/ready")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("Prometheus did not become ready")
            yield client
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)
        log.close()


async def query(client: httpx.AsyncClient, expr: str) -> list[dict[str, Any]]:
    """The instant vector `expr` gives now; a query Prometheus refuses fails the test."""
    answer = await client.get("/api/v1/query", params={"query": expr})
    assert answer.status_code == 200, f"{expr}: {answer.text}"
    body = answer.json()
    assert body["status"] == "success", f"{expr}: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result

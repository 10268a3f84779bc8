"""The Dockerfile and compose file, checked as far as a machine without a container engine
allows: their structure, not a build (see README, "Deploy on Kubernetes")."""

from __future__ import annotations

from pathlib import Path

import yaml

DOCKER = Path(__file__).parents[1] / "docker"


def stages() -> list[list[str]]:
    """The Dockerfile's instructions, split into stages (continuation lines joined)."""
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    found: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("FROM "):
            found.append([])
        found[-1].append(line)
    return found


def test_the_image_is_multi_stage_slim_and_unprivileged() -> None:
    build, final = stages()
    assert build[0].startswith("FROM python:3.11-slim AS build")
    assert final[0] == "FROM python:3.11-slim"
    # Dependencies are wheeled before the sources are copied: that layer stays cached.
    first_copy_of_app = next(i for i, line in enumerate(build) if line.startswith("COPY app "))
    dependency_wheels = next(i for i, line in enumerate(build) if "pip wheel" in line)
    assert dependency_wheels < first_copy_of_app
    assert not any(word in line for line in final for word in ("gcc", "build-essential", "apt-get"))
    user = next(line for line in final if line.startswith("USER "))
    assert user.split()[1].split(":")[0] not in ("0", "root")
    assert 'ENTRYPOINT ["edge-platform"]' in final
    assert any(line.startswith("COPY --from=build /wheels") for line in final)


def test_compose_runs_the_full_stack() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    nodes = [name for name in services if name.startswith("redis-") and name[-1].isdigit()]
    assert len(nodes) == 6
    for name in nodes:
        assert "--cluster-enabled" in services[name]["command"]
    assert "--cluster-replicas 1" in services["redis-cluster"]["command"][0]
    assert services["migrate"]["command"] == ["migrate", "upgrade"]
    assert services["api"]["command"][0] == "serve"
    assert services["controller"]["command"][:2] == ["controller", "--leader-elect"]
    for role in ("api", "controller"):
        env = services[role]["environment"]
        assert env["REDIS_ADDRESSES"].count(":6379") == 3
        assert env["DATABASE_URL"].startswith("postgres://")
        assert services[role]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
    console = services["console"]
    assert console["command"][0] == "console"
    assert console["environment"]["CONSOLE_API_URL"] == "http://api:8000"
    assert "DATABASE_URL" not in console["environment"]  # a client of the API only

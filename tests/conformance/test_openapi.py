"""Conformance of the API to its own OpenAPI document, with schemathesis (examples, coverage,
fuzzing and stateful phases; links inferred from Location headers) over real HTTP, as a platform
admin and as a workspace member: no 5xx, every response matches its documented status codes,
content types, headers and schemas, invalid input is refused with a documented 4xx.

`CONFORMANCE_MAX_EXAMPLES` sets the depth (CI default: small; raise it locally for a deep run).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import httpx
import pytest

from app.main import create_app
from tests.support.platform import ADMIN_PASSWORD, authenticated, login, make_settings
from tests.support.servers import api_server
from tests.support.services import RedisProcess
from tests.support.tenancy import PASSWORD, add_member, create_user

CONFIG = Path(__file__).with_name("schemathesis.toml")
MAX_EXAMPLES = int(os.environ.get("CONFORMANCE_MAX_EXAMPLES", "8"))
READABLE_ID = re.compile(r"^[a-z]+[A-Z][A-Za-z]+$")  # a verb, then the object: listClusters


def test_operation_ids_are_unique_readable_and_stable() -> None:
    schema = create_app(make_settings("postgresql://unused/db")).openapi()
    ids = [op["operationId"] for ops in schema["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids)), "duplicate operationIds"
    for operation_id in ids:
        assert READABLE_ID.match(operation_id), operation_id
    # Clients are generated from these names: the ones the guide and the SDK use stay put.
    for stable in ("listClusters", "createCluster", "createApplicationDeployment",
                   "readApplicationDeployment", "rollbackApplicationDeployment",
                   "createToken", "listRegions", "readVClusterKubeconfig"):  # fmt: skip
        assert stable in ids, stable


def findings(output: str) -> str:
    """The failures and errors of a run's report, without its warnings."""
    kept, keep = [], False
    for line in output.splitlines():
        if "=" * 10 in line:
            keep = any(word in line for word in ("FAILURES", "ERRORS", "SUMMARY"))
        if keep:
            kept.append(line)
    return "\n".join(kept[-200:])


async def run_schemathesis(base: str, token: str, report: Path, *extra: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG),
        "run", f"{base}/openapi.json",
        "--checks", "all",
        # "Schema-valid data must be accepted" cannot hold for an API with rules a schema does
        # not express (a name must be unique, a referenced cluster must exist, NUL characters
        # cannot be stored, If-Match must match): those answers are documented 4xx, checked by
        # status_code_conformance like every other answer.
        "--exclude-checks", "positive_data_acceptance",
        # The examples the spec gives are for people; fuzzing still reaches every operation.
        "--max-examples", str(MAX_EXAMPLES),
        "--header", f"Authorization: Bearer {token}",
        # One worker: with two, hypothesis's lambda descriptions call ast.parse from two threads
        # at once, which CPython 3.11 can fail ("AST constructor recursion depth mismatch").
        "--workers", "1",
        "--request-timeout", "20",
        "--suppress-health-check", "all",
        "--report", "junit", "--report-dir", str(report),
        "--seed", "20261127",
        *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode(errors="replace")


@pytest.mark.slow
def test_every_operation_states_how_to_authenticate() -> None:
    """Generated clients and /docs' "Authorize" read the security of each operation: what an
    operation accepts is what it says, and a public one says so."""
    schema = create_app(make_settings("postgresql://unused/db")).openapi()
    assert set(schema["components"]["securitySchemes"]) == {
        "oauth2",
        "bearer",
        "basic",
        "agentCredential",
    }
    bearer = [{"oauth2": []}, {"bearer": []}]
    security = {
        (method.upper(), path): operation["security"]
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    }
    assert security[("GET", "/api/v1/users/me")] == bearer
    assert security[("POST", "/api/v1/workspaces/{ws}/applicationdeployments")] == bearer
    assert security[("GET", "/chartrepo/index.yaml")] == [*bearer, {"basic": []}]
    assert security[("POST", "/api/v1/agent/credential")] == [{"agentCredential": []}]
    assert security[("GET", "/healthz")] == []
    assert security[("POST", "/oauth/token")] == []
    public = {key for key, value in security.items() if value == []}
    assert public == {
        ("GET", "/healthz"), ("GET", "/livez"), ("GET", "/readyz"), ("GET", "/version"),
        ("GET", "/metrics"), ("POST", "/oauth/token"), ("GET", "/oauth/authorize"),
        ("GET", "/oauth/callback"), ("POST", "/oauth/revoke"), ("POST", "/api/v1/agent/join"),
        ("GET", "/.well-known/openid-configuration"), ("GET", "/oauth/jwks"),
    }  # fmt: skip


async def test_schemathesis_finds_no_server_error_and_no_nonconformance(
    clean_database: str, clean_redis: RedisProcess, tmp_path: Path
) -> None:
    settings = make_settings(
        clean_database, redis_url=clean_redis.url, rate_limit_api_per_minute=1_000_000,
        login_lockout_failures=1_000_000,
    )  # fmt: skip
    async with api_server(settings) as base:
        async with httpx.AsyncClient(base_url=base) as admin:
            await authenticated(admin)
            await create_user(admin, "member")
            response = await admin.post(
                "/api/v1/workspaces", json={"metadata": {"name": "team-a"}, "spec": {}}
            )
            assert response.status_code == 201, response.text
            await add_member(admin, "team-a", "member", "operator")
            tokens = {
                "admin": await login(admin, "admin", ADMIN_PASSWORD),
                "member": await login(admin, "member", PASSWORD),
            }
        for who, token in tokens.items():
            code, output = await run_schemathesis(base, token, tmp_path / who)
            assert code == 0, f"schemathesis as {who} failed:\n{findings(output)}"

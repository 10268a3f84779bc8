"""A `continue` token is the client's to alter: whatever it decodes to, every list answers a
400 problem that says to start again, never a 500 (out-of-range ids reached the database)."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from tests.support.problems import assert_problem
from tests.support.tenancy import create_workspace

PROBLEM = "application/problem+json"


def token(after: object, query: str) -> str:
    """A token as the server makes them, holding `after`."""
    raw = json.dumps({"v": 1, "after": after, "q": query}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def query_of(continue_token: str) -> str:
    padded = continue_token + "=" * (-len(continue_token) % 4)
    query: str = json.loads(base64.urlsafe_b64decode(padded))["q"]
    return query


BAD_KEYS = [
    2**63,  # one past bigint
    -(2**63) - 1,
    10**30,
    True,
    False,
    1.5,
    1e308,
    None,
    [1],
    {"id": 1},
    "\ud800",  # a lone surrogate: not UTF-8, so not a name the database can compare
    "name\x00",
]


@pytest.mark.parametrize("after", BAD_KEYS, ids=repr)
async def test_audit_log_refuses_tokens_it_did_not_make(
    api: httpx.AsyncClient, after: object
) -> None:
    for name in ("a", "b", "c"):
        await create_workspace(api, name)  # a few entries, so that there is a second page
    first = await api.get("/api/v1/auditlogs", params={"limit": 1})
    issued = first.json()["metadata"]["continue"]
    assert issued

    response = await api.get(
        "/api/v1/auditlogs", params={"limit": 1, "continue": token(after, query_of(issued))}
    )
    assert_problem(response, 400, "continue token")

    # The token the server made still pages on.
    second = await api.get("/api/v1/auditlogs", params={"limit": 1, "continue": issued})
    assert second.status_code == 200
    assert second.json()["items"][0]["id"] < first.json()["items"][0]["id"]


async def test_audit_log_ids_at_the_edges_of_bigint_page_normally(
    api: httpx.AsyncClient,
) -> None:
    await create_workspace(api, "a")
    issued = (await api.get("/api/v1/auditlogs", params={"limit": 1})).json()["metadata"]
    query = query_of(issued["continue"])
    everything = await api.get("/api/v1/auditlogs", params={"continue": token(2**63 - 1, query)})
    assert everything.status_code == 200
    assert everything.json()["items"]  # every id is below the largest bigint
    nothing = await api.get("/api/v1/auditlogs", params={"continue": token(-(2**63), query)})
    assert nothing.status_code == 200
    assert nothing.json()["items"] == []


@pytest.mark.parametrize(
    ("since", "fragment"),
    [
        ("0001-01-01T00:00:00+01:00", "outside years 1 to 9999"),  # year 0 in UTC
        ("9999-12-31T23:59:59-01:00", "outside years 1 to 9999"),  # year 10000 in UTC
        ("1.7631897897340785e-178", "RFC 3339"),  # pydantic alone reads it as Unix seconds
        ("1700000000", "RFC 3339"),
    ],
)
async def test_audit_log_since_that_is_no_rfc3339_time_is_422(
    api: httpx.AsyncClient, since: str, fragment: str
) -> None:
    response = await api.get("/api/v1/auditlogs", params={"since": since})
    assert_problem(response, 422, "since", fragment)
    assert (await api.get("/api/v1/auditlogs", params={"since": "0001-01-01T00:00:00Z"})).is_success


async def list_paths(api: httpx.AsyncClient) -> list[str]:
    """Every list operation the API documents with a `continue` parameter."""
    paths = (await api.get("/openapi.json")).json()["paths"]
    return sorted(
        path
        for path, operations in paths.items()
        if any(p["name"] == "continue" for p in operations.get("get", {}).get("parameters", []))
    )


async def test_every_list_refuses_altered_tokens_with_400(api: httpx.AsyncClient) -> None:
    for name in ("team", "other"):
        await create_workspace(api, name)
    # Unfiltered lists share the query part of their tokens: the audit log's fits every list,
    # so each altered token gets past that check to the key it holds.
    issued = (await api.get("/api/v1/auditlogs", params={"limit": 1})).json()["metadata"]
    query = query_of(issued["continue"])
    paths = await list_paths(api)
    assert "/api/v1/auditlogs" in paths
    assert "/api/v1/workspaces/{ws}/serviceaccounts" in paths
    refused: dict[str, list[int]] = {}
    for path in paths:
        url = path.replace("{ws}", "team").replace("{cluster}", "nowhere")
        statuses = []
        # The audit log is paged by id, every other list by name: each refuses the other's key.
        wrong_kind = "a-name" if path == "/api/v1/auditlogs" else 5
        for after in [*BAD_KEYS, wrong_kind]:
            response = await api.get(url, params={"continue": token(after, query)})
            assert response.headers["content-type"].startswith(PROBLEM), (path, response.text)
            statuses.append(response.status_code)
        refused[path] = statuses
    for path, statuses in refused.items():
        # A list under a cluster that does not exist may answer 404 first; nothing answers 5xx.
        expected = {404} if "{cluster}" in path else {400}
        assert set(statuses) == expected, (path, statuses)

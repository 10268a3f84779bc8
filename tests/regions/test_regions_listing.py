"""Lists: keyset paging with continue tokens, and label selectors evaluated in SQL."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from tests.support.problems import assert_problem
from tests.support.regions import API, region


async def names(client: httpx.AsyncClient, **params: str) -> list[str]:
    response = await client.get(API, params=params)
    assert response.status_code == 200, response.text
    return [item["metadata"]["name"] for item in response.json()["items"]]


async def test_pages_are_stable_under_concurrent_inserts(client: httpx.AsyncClient) -> None:
    originals = [f"r{i:02d}" for i in range(25)]
    for name in originals:
        assert (await client.post(API, json=region(name))).status_code == 201

    seen: list[str] = []
    first = (await client.get(API, params={"limit": 10})).json()
    assert first["kind"] == "RegionList"
    assert first["metadata"]["remainingItemCount"] == 15
    seen += [i["metadata"]["name"] for i in first["items"]]

    # Objects created and deleted between pages: before and after the cursor.
    await client.post(API, json=region("a-before-cursor"))
    await client.post(API, json=region("r05x"))
    await client.post(API, json=region("r15x"))
    await client.delete(f"{API}/r12")

    token = first["metadata"]["continue"]
    while token:
        page = (await client.get(API, params={"limit": 10, "continue": token})).json()
        seen += [i["metadata"]["name"] for i in page["items"]]
        token = page["metadata"]["continue"]
    # No duplicates, nothing skipped; rows behind the cursor are not replayed.
    assert len(seen) == len(set(seen))
    assert set(originals) - {"r12"} <= set(seen)
    assert "a-before-cursor" not in seen
    assert "r05x" not in seen
    assert "r15x" in seen
    assert seen == sorted(seen)


async def test_last_page_has_no_token(client: httpx.AsyncClient) -> None:
    for name in ("a", "b", "c"):
        await client.post(API, json=region(name))
    page = (await client.get(API, params={"limit": 3})).json()
    assert page["metadata"] == {"continue": None, "remainingItemCount": None}
    assert len(page["items"]) == 3


async def test_large_limit_is_clamped(client: httpx.AsyncClient) -> None:
    await client.post(API, json=region("a"))
    response = await client.get(API, params={"limit": 100000})
    assert response.status_code == 200
    assert len(response.json()["items"]) == 1


async def test_token_is_bound_to_its_query(client: httpx.AsyncClient) -> None:
    for name in ("a", "b", "c"):
        await client.post(API, json=region(name, {"env": "prod"}))
    page = (await client.get(API, params={"limit": 1, "labelSelector": "env=prod"})).json()
    token = page["metadata"]["continue"]
    assert token
    other = await client.get(API, params={"continue": token, "labelSelector": "env=dev"})
    assert_problem(other, 400, "different query")
    same = await client.get(API, params={"continue": token, "labelSelector": "env = prod"})
    assert same.status_code == 200


FLEET = {
    "east-china": {"geo": "cn", "env": "prod", "tier": "core"},
    "north-china": {"geo": "cn", "env": "prod"},
    "south-china": {"geo": "cn", "env": "test"},
    "eu-west": {"geo": "eu", "env": "prod", "example.com/owner": "ops"},
    "unlabelled": {},
}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("env=prod", {"east-china", "north-china", "eu-west"}),
        ("env==prod", {"east-china", "north-china", "eu-west"}),
        ("env!=prod", {"south-china", "unlabelled"}),  # Kubernetes: != matches "no such key"
        ("geo in (eu, us)", {"eu-west"}),
        ("env notin (prod)", {"south-china", "unlabelled"}),
        ("tier", {"east-china"}),
        ("!tier", {"north-china", "south-china", "eu-west", "unlabelled"}),
        ("geo=cn,env=prod,!tier", {"north-china"}),
        ("example.com/owner=ops", {"eu-west"}),
        ("geo in (cn),env notin (test,dev)", {"east-china", "north-china"}),
        ("", set(FLEET)),
    ],
)
async def test_label_selectors(
    client: httpx.AsyncClient, selector: str, expected: set[str]
) -> None:
    for name, labels in FLEET.items():
        assert (await client.post(API, json=region(name, labels))).status_code == 201
    assert set(await names(client, labelSelector=selector)) == expected


async def test_selector_is_evaluated_by_postgresql(
    app_client: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = app_client
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        statements.append(statement)

    engine = app.state.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        await client.get(API, params={"labelSelector": "env=prod,tier,!x,geo in (cn)"})
    finally:
        event.remove(engine, "before_cursor_execute", record)
    listing = [s for s in statements if "FROM regions" in s]
    assert listing, statements
    assert "@>" in listing[0]
    assert " ? " in listing[0]
    assert "->>" in listing[0]
    assert "LIMIT" in listing[0]

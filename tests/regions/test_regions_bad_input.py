"""Bad input gets a clear 4xx problem+json naming the fault, and changes nothing."""

from __future__ import annotations

import resource
import time

import httpx
import pytest

from tests.support.problems import assert_problem
from tests.support.regions import API, region

YAML = {"content-type": "application/yaml"}


async def assert_nothing_stored(client: httpx.AsyncClient) -> None:
    listed = (await client.get(API)).json()
    assert listed["items"] == []


@pytest.mark.parametrize(
    ("content", "headers", "fragment"),
    [
        ('{"metadata": {"name": "a"', {"content-type": "application/json"}, "malformed JSON"),
        ("metadata: [unclosed", YAML, "malformed YAML"),
        ("[1, 2, 3]", {"content-type": "application/json"}, "must be an object"),
        ("- just\n- a list\n", YAML, "must be an object"),
        ("plain scalar", YAML, "must be an object"),
        ("a: 1\n---\nb: 2\n", YAML, "exactly one document"),
        ('{"metadata": {}, "metadata": {}}', {"content-type": "application/json"}, "duplicate"),
        ("metadata: {}\nmetadata: {}\n", YAML, "duplicate"),
        ("", {"content-type": "application/json"}, "empty"),
        ("\xff\xfe", {"content-type": "application/json"}, "malformed JSON"),
    ],
)
async def test_malformed_bodies_are_400(
    api: httpx.AsyncClient, content: str, headers: dict[str, str], fragment: str
) -> None:
    response = await api.post(API, content=content.encode("latin-1"), headers=headers)
    assert_problem(response, 400, fragment)
    await assert_nothing_stored(api)


async def test_billion_laughs_is_refused_quickly(api: httpx.AsyncClient) -> None:
    bomb = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        bomb += f"{level}: &{level} [{','.join(['*' + previous] * 9)}]\n"
    bomb += "metadata: {name: bomb}\nspec: *i\n"
    started = time.perf_counter()
    response = await api.post(API, content=bomb, headers=YAML)
    assert time.perf_counter() - started < 5  # a generous ceiling: an expansion takes minutes
    assert_problem(response, 400, "anchors")
    await assert_nothing_stored(api)


async def test_aliases_are_refused(api: httpx.AsyncClient) -> None:
    document = "metadata: &m {name: a}\nspec: {}\nother: *m\n"
    assert_problem(await api.post(API, content=document, headers=YAML), 400)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**region("a"), "apiVersion": "v1"}, "apiVersion"),
        ({**region("a"), "kind": "Cluster"}, "kind"),
        (region("East-China"), "metadata.name"),
        (region("a" * 64), "metadata.name"),
        (region("-leading"), "metadata.name"),
        (region("under_score"), "metadata.name"),
        ({"kind": "Region", "metadata": {}, "spec": {}}, "metadata.name"),
        ({"kind": "Region", "spec": {}}, "metadata"),
        ({**region("a"), "spec": {"displayName": "x", "colour": "red"}}, "spec.colour"),
        ({**region("a"), "surprise": 1}, "surprise"),
        ({**region("a"), "spec": {"displayName": 12}}, "spec.displayName"),
        ({**region("a"), "spec": "not an object"}, "spec"),
        (region("a", {"bad key!": "x"}), "metadata.labels"),
        (region("a", {"ok": "bad value!"}), "metadata.labels"),
        (region("a", {"ok": "v" * 64}), "metadata.labels"),
        ({**region("a"), "metadata": {"name": "a", "unknown": 1}}, "metadata.unknown"),
    ],
)
async def test_invalid_objects_are_422_naming_the_field(
    api: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    response = await api.post(API, json=body)
    problem = assert_problem(response, 422)
    fields = [error["field"] for error in problem["errors"]]  # type: ignore[attr-defined]
    assert field in fields, problem
    await assert_nothing_stored(api)


async def test_body_over_one_mebibyte_is_413(api: httpx.AsyncClient) -> None:
    big = region("big", displayName="x")
    big["metadata"]["annotations"] = {"blob": "x" * (2 << 20)}  # type: ignore[index]
    assert_problem(await api.post(API, json=big), 413)

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(40):
            yield b" " * 65536  # no Content-Length: the limit holds on streamed bytes too

    streamed = await api.post(API, content=chunks(), headers={"content-type": "application/json"})
    assert_problem(streamed, 413)
    await assert_nothing_stored(api)


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", None])
async def test_other_media_types_are_415(api: httpx.AsyncClient, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = await api.post(API, content=b'{"metadata": {"name": "a"}}', headers=headers)
    assert_problem(response, 415, "application/json", "application/yaml")


@pytest.mark.parametrize(
    ("selector", "fragment"),
    [
        ("env in (a,b", "unbalanced"),
        ("env notin ()", "empty value"),
        ("bad key!=x", "bad key"),
        ("env=bad value!", "label value"),
        ("env,,tier", "empty requirement"),
        ("env == ", None),  # an empty value is valid: it matches env=""
        ("a" * 5000, "longer than"),
    ],
)
async def test_invalid_label_selector_is_400_naming_the_fault(
    api: httpx.AsyncClient, selector: str, fragment: str | None
) -> None:
    response = await api.get(API, params={"labelSelector": selector})
    if fragment is None:
        assert response.status_code == 200
    else:
        assert_problem(response, 400, fragment)


@pytest.mark.parametrize("token", ["garbage", "e30", "eyJ2IjoxfQ", "!!!", "a" * 300])
async def test_bogus_continue_token_is_400(api: httpx.AsyncClient, token: str) -> None:
    assert_problem(await api.get(API, params={"continue": token}), 400, "continue token")


@pytest.mark.parametrize("limit", ["0", "-1", "ten"])
async def test_bad_limit_is_422(api: httpx.AsyncClient, limit: str) -> None:
    assert_problem(await api.get(API, params={"limit": limit}), 422, "limit")


async def test_huge_or_deep_bodies_are_refused_without_memory_blow_up(
    api: httpx.AsyncClient,
) -> None:
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    ten_megabytes = b"metadata:\n  name: big\nspec:\n  displayName: " + b"x" * (10 << 20)
    assert_problem(await api.post(API, content=ten_megabytes, headers=YAML), 413)
    deep_json = b'{"metadata": ' + b"[" * (900 << 10)  # under the size limit, past recursion
    response = await api.post(API, content=deep_json, headers={"content-type": "application/json"})
    assert_problem(response, 400, "nested too deeply")
    deep_yaml = b"metadata: " + b"[" * (900 << 10)
    assert_problem(await api.post(API, content=deep_yaml, headers=YAML), 400)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert grown < 100 << 10, f"peak memory grew by {grown >> 10} MiB"
    await assert_nothing_stored(api)

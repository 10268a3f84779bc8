"""The chart repository: ChartMuseum's API, Helm's index, upload validation, permissions."""

from __future__ import annotations

import asyncio
import hashlib
import tarfile

import httpx
import pytest
import yaml

from tests.support.chartrepo import GZIP, upload
from tests.support.charts import bomb, chart_archive, special
from tests.support.problems import assert_problem
from tests.support.tenancy import as_user, create_user


async def repo_state(client: httpx.AsyncClient) -> dict[str, list[str]]:
    charts = (await client.get("/chartrepo/api/charts")).json()
    return {name: sorted(v["version"] for v in versions) for name, versions in charts.items()}


async def test_upload_index_download_delete(api: httpx.AsyncClient) -> None:
    archive = chart_archive("demo", "1.0.0")
    assert (await upload(api, archive)).status_code == 201
    multipart = await api.post(
        "/chartrepo/api/charts",
        files={"chart": ("demo-1.1.0-rc.1.tgz", chart_archive("demo", "1.1.0-rc.1"))},
    )
    assert multipart.status_code == 201, multipart.text

    index = await api.get("/chartrepo/index.yaml")
    assert index.status_code == 200
    document = yaml.safe_load(index.text)
    assert document["apiVersion"] == "v1"
    assert document["generated"]
    versions = document["entries"]["demo"]
    assert [v["version"] for v in versions] == ["1.1.0-rc.1", "1.0.0"]  # newest first
    entry = versions[1]
    assert entry["digest"] == hashlib.sha256(archive).hexdigest()
    assert entry["urls"] == ["charts/demo-1.0.0.tgz"]
    assert entry["appVersion"] == "2.0"
    assert entry["description"] == "demo chart"
    assert entry["created"].endswith("Z")
    assert "hello-edge" in document["entries"]  # the built-in chart, loaded at start

    tag = index.headers["etag"]
    assert (
        await api.get("/chartrepo/index.yaml", headers={"If-None-Match": tag})
    ).status_code == 304

    pulled = await api.get("/chartrepo/charts/demo-1.0.0.tgz")
    assert pulled.content == archive
    one = (await api.get("/chartrepo/api/charts/demo/1.0.0")).json()
    assert one["version"] == "1.0.0"
    assert (await api.head("/chartrepo/api/charts/demo")).status_code == 200

    assert_problem(await upload(api, archive), 409, "already exists")
    changed = chart_archive("demo", "1.0.0", files={"demo/README.md": b"new"})
    assert (await upload(api, changed, force="true")).status_code == 201
    assert (await api.get("/chartrepo/charts/demo-1.0.0.tgz")).content == changed
    # Any change gives a new index (the cached one is not served).
    assert (
        await api.get("/chartrepo/index.yaml", headers={"If-None-Match": tag})
    ).status_code == 200

    deleted = await api.delete("/chartrepo/api/charts/demo/1.0.0")
    assert deleted.json() == {"deleted": True}
    assert (await api.get("/chartrepo/charts/demo-1.0.0.tgz")).status_code == 404
    assert (await api.get("/chartrepo/api/charts/demo/1.0.0")).status_code == 404
    assert (await repo_state(api))["demo"] == ["1.1.0-rc.1"]


def _symlink() -> tarfile.TarInfo:
    return special("evil/templates/link.yaml", tarfile.SYMTYPE, "/etc/passwd")


BAD = [
    (b"PK\x03\x04 a zip file", "not a gzip file"),
    (chart_archive("evil")[:60], "corrupt"),
    (chart_archive("evil", files={"other/Chart.yaml": b"name: other"}), "exactly one top-level"),
    (chart_archive("evil", top="different"), "does not match its directory"),
    (chart_archive("evil", chart_yaml={"apiVersion": "v2", "name": "evil", "version": "1.0"}),
     "not SemVer 2"),
    (chart_archive("evil", chart_yaml={"apiVersion": "v3", "name": "evil", "version": "1.0.0"}),
     "apiVersion must be v1 or v2"),
    (chart_archive("evil", files={"/etc/evil.yaml": b"x"}), "absolute path"),
    (chart_archive("evil", files={"evil/../../escape.yaml": b"x"}), "(..)"),
    (chart_archive("evil", extra=[_symlink()]), "is a link"),
    (chart_archive("evil", extra=[special("evil/hard", tarfile.LNKTYPE, "evil/values.yaml")]),
     "is a link"),
    (chart_archive("evil", extra=[special("evil/dev", tarfile.CHRTYPE)]), "device or special"),
    (bomb(150), "expands to more than 100 MiB"),
]  # fmt: skip


@pytest.mark.parametrize(("archive", "fragment"), BAD)
async def test_bad_archives_are_refused_and_change_nothing(
    api: httpx.AsyncClient, archive: bytes, fragment: str
) -> None:
    before = await repo_state(api)
    response = await upload(api, archive)
    assert_problem(response, 422, fragment)
    assert await repo_state(api) == before


async def test_missing_chart_yaml(api: httpx.AsyncClient) -> None:
    import gzip
    import io

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("lonely/values.yaml")
        tar.addfile(info, io.BytesIO(b""))
    assert_problem(await upload(api, gzip.compress(buffer.getvalue())), 422, "no lonely/Chart.yaml")


async def test_oversized_upload_is_413(api: httpx.AsyncClient) -> None:
    assert_problem(await upload(api, b"\x1f\x8b" + bytes(21 << 20)), 413)


async def test_concurrent_uploads_of_one_version(api: httpx.AsyncClient) -> None:
    archive = chart_archive("race", "1.0.0")
    responses = await asyncio.gather(*(upload(api, archive) for _ in range(6)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201, 409, 409, 409, 409, 409]


async def test_catalog_permissions_and_basic_auth(api: httpx.AsyncClient) -> None:
    await create_user(api, "reader")
    reader = await as_user(api, "reader")
    assert (await api.get("/chartrepo/index.yaml", headers=reader)).status_code == 200
    refused = await api.post(
        "/chartrepo/api/charts", content=chart_archive(), headers={**GZIP, **reader}
    )
    assert refused.status_code == 403
    assert (
        await api.delete("/chartrepo/api/charts/hello-edge/0.1.0", headers=reader)
    ).status_code == 403

    account = (
        await api.post(
            "/api/v1/serviceaccounts",
            json={"metadata": {"name": "helm"}, "spec": {"role": "platform-regular"}},
        )
    ).json()["status"]
    anonymous = httpx.AsyncClient(transport=api._transport, base_url=api.base_url)
    async with anonymous:
        challenged = await anonymous.get("/chartrepo/index.yaml")
        assert challenged.status_code == 401
        # Both ways in are offered: Helm, which speaks only Basic, learns it may send it.
        assert challenged.headers["www-authenticate"] == (
            'Bearer realm="edge-platform", Basic realm="edge-platform"'
        )
        basic = await anonymous.get(
            "/chartrepo/index.yaml", auth=(account["clientId"], account["clientSecret"])
        )
        assert basic.status_code == 200
        wrong = await anonymous.get("/chartrepo/index.yaml", auth=(account["clientId"], "nope"))
        assert wrong.status_code == 401
        assert "basic" in wrong.headers["www-authenticate"].lower()

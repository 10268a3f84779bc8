"""Applications and their immutable versions."""

from __future__ import annotations

import httpx

from tests.support.charts import chart_archive
from tests.support.problems import assert_problem
from tests.support.tenancy import as_user, create_user

APPS = "/api/v1/applications"
VERSIONS = "/api/v1/applicationversions"

GUIDE_VERSION = """\
apiVersion: edge.theriseunion.io/v1alpha1
kind: ApplicationVersion
metadata:
  name: monitoring-stack-v2.0.0
spec:
  application: monitoring-stack
  version: 2.0.0
  helm:
    chart: monitoring-stack
    version: 2.0.0
    values:
      prometheus: {retention: 15d}
"""


async def seed(api: httpx.AsyncClient) -> None:
    await api.post(
        "/chartrepo/api/charts",
        content=chart_archive("monitoring-stack", "2.0.0"),
        headers={"content-type": "application/gzip"},
    )
    created = await api.post(
        APPS,
        json={"metadata": {"name": "monitoring-stack"},
              "spec": {"displayName": "Monitoring", "category": "observability"}},
    )  # fmt: skip
    assert created.status_code == 201, created.text


async def test_application_and_versions(api: httpx.AsyncClient) -> None:
    await seed(api)
    version = await api.post(
        VERSIONS, content=GUIDE_VERSION, headers={"content-type": "application/yaml"}
    )
    assert version.status_code == 201, version.text
    assert version.json()["spec"]["helm"]["values"] == {"prometheus": {"retention": "15d"}}
    await api.post(
        "/chartrepo/api/charts",
        content=chart_archive("monitoring-stack", "2.1.0-rc.1"),
        headers={"content-type": "application/gzip"},
    )
    newer = await api.post(
        VERSIONS,
        json={"metadata": {"name": "monitoring-stack-v2.1.0-rc.1"},
              "spec": {"application": "monitoring-stack", "version": "2.1.0-rc.1",
                       "helm": {"chart": "monitoring-stack", "version": "2.1.0-rc.1"}}},
    )  # fmt: skip
    assert newer.status_code == 201, newer.text
    app = (await api.get(f"{APPS}/monitoring-stack")).json()
    assert app["status"] == {"latestVersion": "2.1.0-rc.1", "versionCount": 2}
    listed = (await api.get(VERSIONS, params={"application": "monitoring-stack"})).json()
    assert len(listed["items"]) == 2

    # Immutable: the same spec is accepted (labels may change), another spec is a 409.
    same = await api.patch(
        f"{VERSIONS}/monitoring-stack-v2.0.0",
        json={"metadata": {"labels": {"stage": "stable"}}},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert same.status_code == 200, same.text
    changed = await api.patch(
        f"{VERSIONS}/monitoring-stack-v2.0.0",
        json={"spec": {"helm": {"values": {"prometheus": {"retention": "30d"}}}}},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert_problem(changed, 409, "immutable")

    refused = await api.delete(f"{APPS}/monitoring-stack")
    assert_problem(refused, 409, "monitoring-stack-v2.0.0")


async def test_version_validation(api: httpx.AsyncClient) -> None:
    await seed(api)
    base = {"application": "monitoring-stack", "version": "2.0.0",
            "helm": {"chart": "monitoring-stack", "version": "2.0.0"}}  # fmt: skip
    cases = [
        ({"metadata": {"name": "wrong-name"}, "spec": base}, "metadata.name"),
        ({"metadata": {"name": "monitoring-stack-v2"}, "spec": {**base, "version": "2"}},
         "spec.version"),
        ({"metadata": {"name": "nope-v1.0.0"}, "spec": {**base, "application": "nope",
                                                        "version": "1.0.0"}},
         "spec.application"),
        ({"metadata": {"name": "monitoring-stack-v2.0.0"},
          "spec": {**base, "helm": {"chart": "monitoring-stack", "version": "9.9.9"}}},
         "spec.helm"),
        ({"metadata": {"name": "monitoring-stack-v2.0.0"},
          "spec": {"application": "monitoring-stack", "version": "2.0.0"}}, "spec"),
        ({"metadata": {"name": "monitoring-stack-v2.0.0"},
          "spec": {**base, "workload": {"deployments": [{"name": "web", "spec": {
              "template": {"spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}]}}},
         "spec"),
    ]  # fmt: skip
    for body, field in cases:
        response = await api.post(VERSIONS, json=body)
        problem = assert_problem(response, 422)
        assert any(e["field"].startswith(field) for e in problem["errors"]), (field, problem)
    assert (await api.get(VERSIONS)).json()["items"] == []


async def test_workload_versions_are_checked_as_pod_templates(api: httpx.AsyncClient) -> None:
    await api.post(APPS, json={"metadata": {"name": "web"}, "spec": {"provisioner": "workload"}})
    good = {"metadata": {"name": "web-v1.0.0"},
            "spec": {"application": "web", "version": "1.0.0", "workload": {"deployments": [
                {"name": "web", "spec": {"replicas": 2, "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.27",
                                             "ports": [{"containerPort": 80}]}]}}}}]}}}  # fmt: skip
    assert (await api.post(VERSIONS, json=good)).status_code == 201
    no_image = {"metadata": {"name": "web-v1.0.1"},
                "spec": {"application": "web", "version": "1.0.1", "workload": {"deployments": [
                    {"name": "web", "spec": {"template": {"spec": {"containers": [
                        {"name": "web"}]}}}}]}}}  # fmt: skip
    problem = assert_problem(await api.post(VERSIONS, json=no_image), 422)
    assert "image" in str(problem["errors"])


async def test_catalog_permissions(api: httpx.AsyncClient) -> None:
    await seed(api)
    await create_user(api, "viewer")
    viewer = await as_user(api, "viewer")
    assert (await api.get(APPS, headers=viewer)).status_code == 200
    assert (await api.get(f"{APPS}/monitoring-stack", headers=viewer)).status_code == 200
    denied = await api.post(APPS, json={"metadata": {"name": "x"}}, headers=viewer)
    assert denied.status_code == 403
    assert (await api.delete(f"{APPS}/monitoring-stack", headers=viewer)).status_code == 403

"""A vcluster on a host emulator: provisioned, registered as a Cluster once the chart's
kubeconfig Secret appears (the test plays the chart), targeted by a deployment that lands on a
second emulator (the vcluster's API), and removed from both sides."""

from __future__ import annotations

import base64

import yaml

from app.vclusters.registration import vcluster_namespace
from tests.support.charts import chart_archive
from tests.support.deployments import WORKSPACE, Platform
from tests.support.edge import EdgeCluster, node
from tests.support.tenancy import add_member, as_user, create_user

VCLUSTERS = f"/api/v1/workspaces/{WORKSPACE}/vclusters"
# The host namespace and the Cluster's name: the vcluster's name and a digest of its workspace.
NAMESPACE = REGISTERED = vcluster_namespace(WORKSPACE, "tenant-one")


async def test_a_vcluster_is_provisioned_registered_targeted_and_removed(
    platform: Platform,
) -> None:
    client = platform.client
    inner = await EdgeCluster(nodes=[node("vc-node", zone="sh-a")], auto_ready=True).start()
    try:
        body = {
            "metadata": {"name": "tenant-one"},
            "spec": {
                "cluster": "shanghai-cluster",
                "nodeGroupRef": "monitoring-nodes",
                "kubernetesVersion": "v1.30.2",
                "endpoint": inner.url,
                "values": {"sync": {"toHost": {"ingresses": {"enabled": True}}}},
            },
        }
        missing_chart = await client.post(VCLUSTERS, json=body)
        assert missing_chart.status_code == 422
        assert "upload it to /chartrepo" in missing_chart.text
        uploaded = await client.post(
            "/chartrepo/api/charts",
            content=chart_archive("vcluster", "0.30.1"),
            headers={"content-type": "application/gzip"},
        )
        assert uploaded.status_code == 201
        not_granted = await client.post(
            VCLUSTERS, json=body | {"spec": body["spec"] | {"cluster": "nowhere-cluster"}}
        )
        assert not_granted.status_code == 422

        platform.start_controller()
        created = await client.post(VCLUSTERS, json=body)
        assert created.status_code == 201, created.text
        host = platform.fleet["shanghai-cluster"]
        status = await platform.wait_for(
            f"{VCLUSTERS}/tenant-one", lambda d: d["status"]["phase"] == "Provisioning"
        )
        assert "kubeconfig Secret" in status["status"]["message"]
        chart = host.get("helmcharts", NAMESPACE, "tenant-one")
        assert chart is not None
        assert (chart["spec"]["chart"], chart["spec"]["version"]) == ("vcluster", "0.30.1")
        assert chart["spec"]["authSecret"] == {"name": "tenant-one-chartrepo"}
        values = yaml.safe_load(chart["spec"]["valuesContent"])
        assert values["controlPlane"]["distro"]["k8s"]["version"] == "v1.30.2"
        assert values["controlPlane"]["statefulSet"]["scheduling"]["nodeSelector"] == {
            "theriseunion.io/nodegroup": "monitoring-nodes"
        }
        assert values["sync"] == {"toHost": {"ingresses": {"enabled": True}}}
        assert host.get("namespaces", None, NAMESPACE) is not None

        # The vcluster chart writes the kubeconfig (its in-pod address) into vc-<release>.
        kubeconfig = yaml.safe_load(inner.kubeconfig())
        kubeconfig["clusters"][0]["cluster"]["server"] = "https://localhost:8443"
        host.store[("secrets", NAMESPACE, "vc-tenant-one")] = {
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "vc-tenant-one", "namespace": NAMESPACE},
            "data": {"config": base64.b64encode(yaml.safe_dump(kubeconfig).encode()).decode()},
        }  # fmt: skip
        ready = await platform.wait_for(
            f"{VCLUSTERS}/tenant-one", lambda d: d["status"]["phase"] == "Ready"
        )
        assert ready["status"]["clusterRef"] == REGISTERED
        registered = await platform.wait_for(
            f"/api/v1/clusters/{REGISTERED}", lambda d: d["status"]["phase"] == "Ready"
        )
        assert registered["spec"]["provider"] == "vcluster"
        assert registered["spec"]["region"] == "east-china"
        assert registered["metadata"]["labels"]["edge.theriseunion.io/vcluster-host"] == (
            "shanghai-cluster"
        )
        assert "kubeconfig" not in str(registered["spec"]["connection"]).replace(
            "kubeconfigConfigured", ""
        )

        # Granted to its workspace alone: a workspace whose selector matches every cluster
        # does not get it (and stays readable).
        selector = {"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}
        other = await client.post(
            "/api/v1/workspaces",
            json={"metadata": {"name": "other"}, "spec": {"clusterSelector": selector}},
        )
        assert other.status_code == 201
        intruder = {
            "metadata": {"name": "intruder"},
            "spec": {"applicationVersionRef": "monitoring-stack-v2.0.0",
                     "targets": [{"clusters": [REGISTERED]}]},
        }  # fmt: skip
        refused_target = await client.post(
            "/api/v1/workspaces/other/applicationdeployments", json=intruder
        )
        assert refused_target.status_code == 422
        assert (await client.get("/api/v1/workspaces/other")).status_code == 200

        # Workspace admins read its kubeconfig (pointing at the reachable endpoint); viewers not.
        config = await client.get(f"{VCLUSTERS}/tenant-one/kubeconfig")
        assert config.status_code == 200
        assert yaml.safe_load(config.text)["clusters"][0]["cluster"]["server"] == inner.url
        await create_user(client, "vera")
        await add_member(client, WORKSPACE, "vera", "viewer")
        viewer = await as_user(client, "vera")
        refused = await client.get(f"{VCLUSTERS}/tenant-one/kubeconfig", headers=viewer)
        assert refused.status_code == 403
        audit = await client.get("/api/v1/auditlogs", params={"workspace": WORKSPACE})
        assert any(e.get("action") == "read-kubeconfig" for e in audit.json()["items"])

        # A deployment targets the vcluster like any cluster and lands inside it.
        deployment = {
            "metadata": {"name": "inside"},
            "spec": {
                "applicationVersionRef": "monitoring-stack-v2.0.0",
                "targets": [{"clusters": [REGISTERED], "replicas": 1}],
            },
        }
        base = f"/api/v1/workspaces/{WORKSPACE}/applicationdeployments"
        assert (await client.post(base, json=deployment)).status_code == 201
        await platform.ready("inside")
        assert inner.get("deployments", "ws-team-a", "prometheus") is not None

        in_use = await client.delete(f"{VCLUSTERS}/tenant-one")
        assert in_use.status_code == 409
        assert "inside" in in_use.json()["detail"]
        forced = await client.delete(f"{VCLUSTERS}/tenant-one", params={"force": "true"})
        assert forced.status_code == 200
        await platform.wait_for(VCLUSTERS, lambda d: d["items"] == [], within=30)
        assert host.get("helmcharts", NAMESPACE, "tenant-one") is None
        assert host.get("namespaces", None, NAMESPACE) is None
        assert (await client.get(f"/api/v1/clusters/{REGISTERED}")).status_code == 404
        workspace = (await client.get(f"/api/v1/workspaces/{WORKSPACE}")).json()
        assert REGISTERED not in workspace["spec"]["clusters"]
        remaining = (await client.get(f"{base}/inside")).json()["status"]["targets"]
        assert remaining == []
    finally:
        await inner.stop()

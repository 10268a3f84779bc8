"""The chart wires the edge agents' tunnels: each API replica advertises its pod address (the
others forward agent requests there), and the controller reaches the tunnels through the API
Service."""

from __future__ import annotations

import helm_python as helm

from tests.support.platform_chart import (
    MINIMAL,
    PRODUCTION,
    command_values,
    env,
    find,
    render,
    validate,
)


def test_replicas_advertise_their_pod_address_and_the_controller_uses_the_service(
    chart: helm.Chart,
) -> None:
    for command in (MINIMAL, PRODUCTION):
        docs = render(chart, command_values(command))
        validate(docs)
        api = env(find(docs, "Deployment", "edge-platform-api-server"))
        assert api["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
        assert api["TUNNEL_ADVERTISE_URL"] == "http://$(POD_IP):8000"
        controller = env(find(docs, "Deployment", "edge-platform-controller"))
        service = find(docs, "Service", "edge-platform-api-server")
        port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "http")
        assert controller["AGENT_PROXY_URL"] == f"http://edge-platform-api-server:{port}"

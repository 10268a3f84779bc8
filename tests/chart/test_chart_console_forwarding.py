"""The chart gives the API and the console one generated CONSOLE_FORWARDING_SECRET (the console
proves its browsers' addresses with it), and lets the console believe the proxies in front."""

from __future__ import annotations

import base64

import helm_python as helm

from tests.support.platform_chart import (
    MINIMAL,
    PRODUCTION,
    command_values,
    container,
    env,
    find,
    render,
    validate,
)

KEY = "console-forwarding-secret"


def test_api_and_console_share_a_generated_forwarding_secret(chart: helm.Chart) -> None:
    for command in (MINIMAL, PRODUCTION):
        docs = render(chart, command_values(command))
        validate(docs)
        api = env(find(docs, "Deployment", "edge-platform-api-server"))
        console = env(find(docs, "Deployment", "edge-platform-console"))
        for variables in (api, console):
            reference = variables["CONSOLE_FORWARDING_SECRET"]["secretKeyRef"]
            assert reference == {"name": "edge-platform-secrets", "key": KEY}
        generated = find(docs, "Secret", "edge-platform-secrets")["data"][KEY]
        assert len(base64.b64decode(generated)) >= 32  # production mode refuses less
        # Only the API and the console hold it.
        controller = env(find(docs, "Deployment", "edge-platform-controller"))
        assert "CONSOLE_FORWARDING_SECRET" not in controller
        # The console believes no proxy's X-Forwarded-For unless told (uvicorn: loopback).
        assert "FORWARDED_ALLOW_IPS" not in console


def test_without_the_console_the_api_needs_no_forwarding_secret(chart: helm.Chart) -> None:
    docs = render(chart, {"console": {"enabled": False}})
    api = env(find(docs, "Deployment", "edge-platform-api-server"))
    assert "CONSOLE_FORWARDING_SECRET" not in api


def test_the_proxies_in_front_of_the_console_can_be_trusted(chart: helm.Chart) -> None:
    values = {"console": {"trustedProxies": "10.0.0.0/8,192.168.0.10"}}
    chart.validate_schema(values)
    docs = render(chart, values)
    validate(docs)
    console = find(docs, "Deployment", "edge-platform-console")
    assert env(console)["FORWARDED_ALLOW_IPS"] == "10.0.0.0/8,192.168.0.10"
    assert container(console)["args"][0] == "console"

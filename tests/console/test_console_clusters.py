"""A cluster's page and edge clusters reached through an agent: the fleet's tiles say how each
agent stands, a cluster's page shows its state, and a platform admin issues a join token whose
command is shown once (no-store, not again on a reload, the real token: the API accepts it).
A viewer is offered no join form; the console shows the API's refusal when one is forced."""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from websockets.asyncio.client import ClientConnection, connect

from app.tunnel.protocol import HEADER, MAX_FRAME_BYTES, Frame
from tests.support.browser import Driver, find, shot, sign_in, wait
from tests.support.console import Console, hidden, plain_client, signed_in
from tests.support.deployments import WORKSPACE
from tests.support.platform import ADMIN_PASSWORD
from tests.support.tenancy import PASSWORD, add_member, create_user

pytestmark = pytest.mark.slow

CLUSTERS = "/api/v1/clusters"
AGENT_VERSION = "0.9.1-test"


async def add_agent_cluster(admin: httpx.AsyncClient, name: str) -> None:
    body = {
        "metadata": {"name": name},
        "spec": {"region": "east-china", "connection": {"type": "agent"}},
    }
    response = await admin.post(CLUSTERS, json=body)
    assert response.status_code == 201, response.text


async def join(admin: httpx.AsyncClient, token: str) -> httpx.Response:
    """What the agent does with the token (anonymously, the token in the body)."""
    return await admin.post(
        "/api/v1/agent/join", json={"token": token}, headers={"Authorization": ""}
    )


@contextlib.asynccontextmanager
async def agent_online(api_url: str, credential: str) -> AsyncIterator[ClientConnection]:
    """An agent's tunnel, as far as the platform's records go: connected, and its HELLO."""
    async with connect(
        api_url.replace("http://", "ws://") + "/api/v1/agent/tunnel",
        additional_headers={"Authorization": f"Bearer {credential}"},
        max_size=MAX_FRAME_BYTES,
        open_timeout=5,
    ) as connection:
        hello = json.dumps({"version": AGENT_VERSION}).encode()
        await connection.send(HEADER.pack(Frame.HELLO, 0) + hello)
        yield connection


def token_of(command: str) -> str:
    found = re.search(r"joinToken=([^\s'\"]+)", command)
    assert found, command
    return found.group(1)


def command_in(page: str) -> str:
    """The join command a result page shows (in its read-only field)."""
    found = re.search(r'<textarea id="join-command"[^>]*>(.*?)</textarea>', page, re.S)
    assert found, "no join command on the page"
    return html.unescape(found.group(1))


def document_headers(driver: Driver, url: str) -> dict[str, str]:
    """The headers of the last document the browser received from `url` (its network log)."""
    found: dict[str, str] = {}
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] != "Network.responseReceived":
            continue
        response = message["params"]["response"]
        if message["params"]["type"] == "Document" and response["url"] == url:
            found = {k.lower(): v for k, v in response["headers"].items()}
    assert found, f"no document from {url} in the network log"
    return found


async def test_an_admin_sees_agents_on_the_fleet_and_issues_a_join_token_shown_once(
    console: Console, logged_browser: Driver
) -> None:
    platform = console.platform
    browser = logged_browser
    base = console.url
    await add_agent_cluster(platform.client, "factory-7")  # no agent has joined
    await add_agent_cluster(platform.client, "factory-8")  # its agent is connected
    issued = await platform.client.post(f"{CLUSTERS}/factory-8/join-token")
    credential = (await join(platform.client, issued.json()["token"])).json()["credential"]

    async with agent_online(console.api_url, credential):
        await platform.wait_for(
            f"{CLUSTERS}/factory-8",
            lambda c: (
                c["status"]["agent"]["connected"]
                and c["status"]["agent"]["version"] == AGENT_VERSION
            ),
        )

        def see_the_fleet_and_a_connected_agent() -> None:
            sign_in(browser, base, "admin", ADMIN_PASSWORD)
            never = find(browser, "li.tile[data-cluster=factory-7]").text
            assert "via agent" in never
            assert "agent never joined" in never
            connected = find(browser, "li.tile[data-cluster=factory-8]").text
            assert re.search(r"via agent · connected \d+ s\b", connected), connected
            direct = find(browser, "li.tile[data-cluster=shanghai-cluster]").text
            assert "agent" not in direct  # direct clusters as before
            shot(browser, "fleet-agents")
            find(browser, "li.tile[data-cluster=factory-8] h3 a").click()
            wait(browser, lambda d: d.current_url == f"{base}/clusters/factory-8")
            assert find(browser, "#agent-words").text.startswith("connected ")
            agent = find(browser, "#agent").text
            assert AGENT_VERSION in agent
            assert "127.0.0.1" in agent  # where it connects from
            assert "through an agent" in find(browser, "#connection").text
            # It has an agent: issuing a token asks first, saying what it does.
            assert "cuts off its current agent" in str(
                find(browser, "#join-form").get_attribute("data-confirm")
            )
            shot(browser, "cluster-agent-connected")

        await asyncio.to_thread(see_the_fleet_and_a_connected_agent)

    def issue_a_join_token() -> str:
        browser.get(f"{base}/clusters/factory-7")
        assert find(browser, "#agent-words").text == "agent never joined"
        assert find(browser, "#cluster-phase").text == "Pending"
        form = find(browser, "#join-form")
        assert form.get_attribute("data-confirm") is None  # nothing to cut off: no question
        shot(browser, "cluster-agent-never-joined")
        browser.get_log("performance")  # start the network log afresh
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait(browser, lambda d: d.find_elements(By.ID, "join-command"))
        command = str(find(browser, "#join-command").get_attribute("value"))
        assert command.startswith("helm install edge-agent"), command
        assert find(browser, "#join-command").get_attribute("readonly") is not None
        assert "Shown only once" in find(browser, "#shown-once").text
        assert "expires at" in find(browser, "#join-expiry").text
        headers = document_headers(browser, f"{base}/clusters/factory-7/join-token")
        assert headers["cache-control"] == "no-store"
        # The token is in the page only: not in its address, not in a cookie.
        token = token_of(command)
        assert token not in browser.current_url
        assert all(token not in str(c.get("value")) for c in browser.get_cookies())
        # The copy button (the script's): the command lands on the clipboard.
        browser.execute_cdp_cmd(
            "Browser.grantPermissions",
            {"origin": base, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
        )
        find(browser, "button[data-copy=join-command]").click()
        wait(browser, lambda d: find(d, "#copy-status").text == "Copied.")
        copied = browser.execute_async_script(
            "navigator.clipboard.readText().then(arguments[0], () => arguments[0](null))"
        )
        assert copied == command
        shot(browser, "join-token")
        return command

    command = await asyncio.to_thread(issue_a_join_token)
    token = token_of(command)

    def reload_the_result() -> None:
        browser.refresh()  # the browser sends the form again
        wait(browser, lambda d: d.find_elements(By.ID, "not-shown-again"))
        assert "not shown again" in find(browser, "#not-shown-again").text
        assert not browser.find_elements(By.ID, "join-command")
        assert token not in browser.page_source
        shot(browser, "join-token-reloaded")

    await asyncio.to_thread(reload_the_result)
    # What the page showed is the real token, and the reload issued none after it: the API
    # takes it, once.
    joined = await join(platform.client, token)
    assert joined.status_code == 200, joined.text
    assert joined.json()["cluster"] == "factory-7"
    assert (await join(platform.client, token)).status_code == 401

    def again_cuts_off_the_agent() -> str:
        browser.get(f"{base}/clusters/factory-7")
        assert find(browser, "#agent-words").text == "agent not connected"
        button = find(browser, "#join-form button[type=submit]")
        button.click()
        dialog = wait(browser, lambda d: d.find_element(By.ID, "confirm-dialog"))
        wait(browser, lambda d: dialog.get_attribute("open") is not None)
        assert "cuts off its current agent" in dialog.text
        dialog.find_element(By.CSS_SELECTOR, "button[value=yes]").click()
        wait(browser, lambda d: d.find_elements(By.ID, "join-command"))
        return str(find(browser, "#join-command").get_attribute("value"))

    second = token_of(await asyncio.to_thread(again_cuts_off_the_agent))
    assert second != token
    cut_off = (await platform.client.get(f"{CLUSTERS}/factory-7")).json()["status"]["agent"]
    assert cut_off["joined"] is False

    platform.start_controller()  # probes: the direct cluster's page has a status to show
    await platform.wait_for(
        f"{CLUSTERS}/shanghai-cluster", lambda c: c["status"]["phase"] == "Ready"
    )

    def a_direct_cluster() -> None:
        browser.get(f"{base}/clusters/shanghai-cluster")
        assert not browser.find_elements(By.ID, "agent")
        assert not browser.find_elements(By.ID, "join-form")
        assert find(browser, "#cluster-phase").text == "Ready"
        assert re.search(r"probed \d+s ago", find(browser, ".phase-line").text)
        facts = find(browser, "#cluster-facts").text
        assert "2/2 ready" in facts
        assert "shanghai" in facts.split("Zones", 1)[1]  # the nodes' zone
        assert find(browser, "#connection").text.startswith("direct")
        assert "None reported yet" not in find(browser, "#conditions-table").text
        groups = find(browser, "#nodegroups-table").text
        assert "monitoring-nodes" in groups
        assert "1/1" in groups
        shot(browser, "cluster-direct")

    await asyncio.to_thread(a_direct_cluster)


async def test_a_viewer_sees_the_agents_state_and_no_join_form(
    console: Console, browser: Driver
) -> None:
    platform = console.platform
    await add_agent_cluster(platform.client, "factory-7")
    await create_user(platform.client, "vera")
    await add_member(platform.client, WORKSPACE, "vera", "viewer")
    granted = (await platform.client.get(f"/api/v1/workspaces/{WORKSPACE}")).json()
    response = await platform.client.patch(
        f"/api/v1/workspaces/{WORKSPACE}",
        json={"spec": {"clusters": [*granted["spec"]["clusters"], "factory-7"]}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status_code == 200, response.text
    base = console.url

    def look() -> None:
        sign_in(browser, base, "vera", PASSWORD)
        assert "agent never joined" in find(browser, "li.tile[data-cluster=factory-7]").text
        browser.get(f"{base}/clusters/factory-7")
        assert find(browser, "#agent-words").text == "agent never joined"
        assert not browser.find_elements(By.ID, "join-form")
        assert not browser.find_elements(By.CSS_SELECTOR, "form[action$='/join-token']")
        shot(browser, "viewer-cluster-agent")

    await asyncio.to_thread(look)


# Over plain HTTP: what the browser cannot show (headers, cookies, logs, forged forms).


async def test_the_join_token_is_in_one_answer_only(
    console: Console, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await add_agent_cluster(console.platform.client, "factory-7")
    async with plain_client(console) as client:
        csrf = await signed_in(client)
        page = await client.get("/clusters/factory-7")
        assert page.status_code == 200
        ticket = hidden(page.text, "ticket")
        form = {"csrf": csrf, "ticket": ticket, "confirmed": ""}
        url = "/clusters/factory-7/join-token"
        forged = await client.post(url, data=form | {"csrf": "forged"})
        assert forged.status_code == 403
        issued = await client.post(url, data=form)
        assert issued.status_code == 200, issued.text
        assert issued.headers["cache-control"] == "no-store"
        token = token_of(command_in(issued.text))
        assert token.startswith("edge-join-")
        for name, value in issued.headers.multi_items():
            assert token not in value, name
        # Sent again (a reload): the ticket is spent; nothing is issued, nothing shown.
        again = await client.post(url, data=form)
        assert again.status_code == 409
        assert "not shown again" in again.text
        assert "edge-join-" not in again.text
        # An old page's form (over an hour) issues nothing either.
        old = f"{int(time.time()) - 7200}x{ticket.partition('x')[2]}"
        stale = await client.post(url, data=form | {"ticket": old})
        assert stale.status_code == 409
        assert "edge-join-" not in stale.text
        assert (await join(console.platform.client, token)).status_code == 200
        # Joined now: without JavaScript the form asks on a page of its own first.
        page = await client.get("/clusters/factory-7")
        form = {"csrf": csrf, "ticket": hidden(page.text, "ticket"), "confirmed": ""}
        asked = await client.post(url, data=form)
        assert asked.status_code == 200
        assert "cuts off its current agent" in asked.text
        assert "edge-join-" not in asked.text
        assert hidden(asked.text, "ticket") == form["ticket"]
        confirmed = await client.post(url, data=form | {"confirmed": "yes"})
        assert confirmed.status_code == 200
        assert token_of(command_in(confirmed.text)) != token
    logged = "\n".join(r.getMessage() for r in caplog.records)
    # The API logged the calls (by route), nobody the token.
    assert "POST /api/v1/clusters/{name}/join-token" in logged
    assert token not in logged


async def test_what_the_api_refuses_is_said_in_words(console: Console) -> None:
    """The form is not offered where the API would refuse it; sent anyway, the page says why."""
    await add_agent_cluster(console.platform.client, "factory-7")
    await create_user(console.platform.client, "vera")
    await add_member(console.platform.client, WORKSPACE, "vera", "viewer")
    granted: dict[str, Any] = (
        await console.platform.client.get(f"/api/v1/workspaces/{WORKSPACE}")
    ).json()
    await console.platform.client.patch(
        f"/api/v1/workspaces/{WORKSPACE}",
        json={"spec": {"clusters": [*granted["spec"]["clusters"], "factory-7"]}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    async with plain_client(console) as client:
        csrf = await signed_in(client, "vera", PASSWORD)
        page = await client.get("/clusters/factory-7")
        assert page.status_code == 200
        assert "join-token" not in page.text
        refused = await client.post(
            "/clusters/factory-7/join-token",
            data={"csrf": csrf, "ticket": f"{int(time.time())}xabc", "confirmed": ""},
        )
        assert refused.status_code == 403
        assert "this needs the platform-admin role" in refused.text
        assert "edge-join-" not in refused.text
        # A cluster she cannot see is not found, as the API says.
        assert (await client.get("/clusters/no-such-cluster")).status_code == 404
    async with plain_client(console) as client:
        csrf = await signed_in(client)
        page = await client.get("/clusters/shanghai-cluster")
        assert page.status_code == 200
        assert "join-token" not in page.text  # nothing to join: no form
        direct = await client.post(
            "/clusters/shanghai-cluster/join-token",
            data={"csrf": csrf, "ticket": f"{int(time.time())}xabc", "confirmed": ""},
        )
        assert direct.status_code == 409
        assert "reached directly" in direct.text

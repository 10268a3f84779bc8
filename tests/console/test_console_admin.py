"""An operator sets a fresh platform up from the console alone, in headless Chromium: a region,
clusters registered by a pasted kubeconfig and by an uploaded file, one behind NAT, node groups,
a user, a workspace with the user as a member, a service account for Helm, a chart, an
application and its version, and a rollout of it across two regions to Ready; refusals said in
words with what was typed kept; the user, not an admin, is offered none of it; the fleet page
left open shows a stopped edge Unreachable. The edges are
kmock emulators; the API runs the controller in its process, as `dev` does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from app.config import Settings
from app.console.app import create_console_app
from app.main import create_app
from tests.support.browser import find, shot, sign_in, wait
from tests.support.charts import chart_archive
from tests.support.console import SESSION_SECRET
from tests.support.deployments import fast_settings
from tests.support.edge import EdgeCluster, node
from tests.support.platform import authenticated
from tests.support.servers import http_server
from tests.support.services import RedisProcess

pytestmark = pytest.mark.slow


@pytest.fixture
async def fresh(
    clean_database: str, clean_redis: RedisProcess
) -> AsyncIterator[tuple[str, str, Settings]]:
    """A platform with nothing registered, its controller running; (API URL, console URL)."""
    settings = fast_settings(clean_database, redis_url=clean_redis.url)
    async with http_server(create_app(settings, dev=True)) as api_url:
        updates = {"console_api_url": api_url, "console_cookie_secure": False}
        console = create_console_app(settings.model_copy(update=updates), secret=SESSION_SECRET)
        async with http_server(console) as console_url:
            yield api_url, console_url, settings


@pytest.fixture
async def edges() -> AsyncIterator[dict[str, EdgeCluster]]:
    clusters = {
        "shanghai-cluster": EdgeCluster(
            nodes=[node("sh-1", zone="sh", group="monitoring-nodes"), node("sh-2", zone="sh")],
            auto_ready=True,
        ),
        "shenzhen-cluster": EdgeCluster(
            nodes=[node("sz-1", zone="sz", group="monitoring-nodes")], auto_ready=True
        ),
    }
    for edge in clusters.values():
        await edge.start()
    yield clusters
    for edge in clusters.values():
        await edge.stop()


def fill(driver: webdriver.Chrome, css: str, text: str) -> WebElement:
    field = find(driver, css)
    field.clear()
    field.send_keys(text)
    return field


def problem_text(driver: webdriver.Chrome) -> str:
    return find(driver, ".error[role=alert]").text


def set_textarea(driver: webdriver.Chrome, css: str, text: str) -> None:
    """A kubeconfig is long: set it as a paste would, not key by key."""
    driver.execute_script("document.querySelector(arguments[0]).value = arguments[1]", css, text)


async def test_an_admin_sets_up_regions_clusters_and_node_groups_in_the_browser(
    fresh: tuple[str, str, Settings],
    edges: dict[str, EdgeCluster],
    browser: webdriver.Chrome,
    tmp_path: Path,
) -> None:
    api_url, console, _ = fresh
    driver = browser
    kubeconfig_file = tmp_path / "shenzhen.yaml"
    kubeconfig_file.write_text(edges["shenzhen-cluster"].kubeconfig())
    chart_file = tmp_path / "edge-demo-0.1.0.tgz"
    chart_file.write_bytes(chart_archive("edge-demo", "0.1.0"))

    def from_nothing_to_a_region() -> None:
        sign_in(driver, console, "admin", "admin-test-password")
        assert "No regions and no clusters yet" in find(driver, "#fleet-empty").text
        find(driver, "#fleet-empty a[href='/admin/regions']").click()
        wait(driver, lambda d: d.current_url.endswith("/admin/regions"))
        fill(driver, "#region-name", "east-china")
        fill(driver, "#region-display", "East China")
        fill(driver, "#region-labels", "geo=cn")
        find(driver, "#new-region button[type=submit]").click()
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "tr[data-region=east-china]"))
        # The same name again: refused in words, and what was typed is still there.
        fill(driver, "#region-name", "east-china")
        fill(driver, "#region-display", "Again")
        find(driver, "#new-region button[type=submit]").click()
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".error[role=alert]"))
        assert "already exists" in problem_text(driver)
        assert find(driver, "#region-display").get_attribute("value") == "Again"
        fill(driver, "#region-name", "south-china")
        fill(driver, "#region-display", "")
        find(driver, "#new-region button[type=submit]").click()
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "tr[data-region=south-china]"))

    def register_clusters() -> None:
        driver.get(f"{console}/fleet")
        find(driver, "#register-link").click()
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#register-cluster"))
        # An address the guard refuses (cloud metadata): said in words, the name kept.
        fill(driver, "#cluster-name", "shanghai-cluster")
        set_textarea(driver, "#kubeconfig", edges["shanghai-cluster"].kubeconfig().replace(
            edges["shanghai-cluster"].url, "https://169.254.169.254"))  # fmt: skip
        find(driver, "#register-cluster button[type=submit]").click()
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".error[role=alert]"))
        assert "169.254.169.254" in problem_text(driver)
        assert find(driver, "#cluster-name").get_attribute("value") == "shanghai-cluster"
        # Pasted.
        set_textarea(driver, "#kubeconfig", edges["shanghai-cluster"].kubeconfig())
        find(driver, "#register-cluster button[type=submit]").click()
        wait(driver, lambda d: d.current_url.endswith("/clusters/shanghai-cluster"))
        # Uploaded as a file.
        driver.get(f"{console}/admin/clusters/new")
        fill(driver, "#cluster-name", "shenzhen-cluster")
        find(driver, "#cluster-region").send_keys("south-china")
        find(driver, "#kubeconfig-file").send_keys(str(kubeconfig_file))
        find(driver, "#register-cluster button[type=submit]").click()
        wait(driver, lambda d: d.current_url.endswith("/clusters/shenzhen-cluster"))
        # Behind NAT: its page offers the join token next.
        driver.get(f"{console}/admin/clusters/new")
        fill(driver, "#cluster-name", "store-0042")
        find(driver, "input[name=type][value=agent]").click()
        assert not find(driver, "#kubeconfig").is_displayed()
        find(driver, "#register-cluster button[type=submit]").click()
        wait(driver, lambda d: d.current_url.endswith("/clusters/store-0042"))
        assert find(driver, "#join-form")

    def ready(name: str) -> None:
        def probed(d: webdriver.Chrome) -> bool:
            d.get(f"{console}/clusters/{name}")
            return find(d, "#cluster-phase").text == "Ready"

        wait(driver, probed, within=30)

    def node_groups_and_refusals() -> None:
        for name in ("shenzhen-cluster", "shanghai-cluster"):
            ready(name)
            fill(driver, "#group-name", "monitoring-nodes")
            # Which nodes it would hold, before anything is saved.
            find(driver, "#new-nodegroup button[value=preview]").click()
            wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#group-preview"))
            assert "It would hold 1 node" in find(driver, "#group-preview").text
            assert "monitoring-nodes" not in find(driver, "#nodegroups-table").text
            find(driver, "#new-nodegroup button[value=save]").click()
            wait(driver, lambda d: "monitoring-nodes" in find(d, "#nodegroups-table").text)

        def counted(d: webdriver.Chrome) -> bool:
            d.get(f"{console}/clusters/shanghai-cluster")
            return "sh-1" in find(d, "#nodegroups-table").text

        wait(driver, counted, within=30)
        # Edited: the group becomes the nodes of zone sh, both of them.
        find(driver, "#nodegroups-table details.edit-group summary").click()
        fill(driver, "#selector-monitoring-nodes", "topology.kubernetes.io/zone=sh")
        find(driver, "#nodegroups-table details.edit-group button[type=submit]").click()

        def both(d: webdriver.Chrome) -> bool:
            d.get(f"{console}/clusters/shanghai-cluster")
            return "sh-1, sh-2" in find(d, "#nodegroups-table").text

        wait(driver, both, within=30)
        shot(driver, "admin-cluster-page")
        # Disable, then enable again.
        find(driver, "#cluster-actions button.secondary").click()
        wait(driver, lambda d: "disabled" in find(d, ".phase-line").text)
        find(driver, "#cluster-actions button.secondary").click()
        wait(driver, lambda d: "disabled" not in find(d, ".phase-line").text)
        # A region that clusters use cannot go: the page says which.
        driver.get(f"{console}/admin/regions")
        row = find(driver, "tr[data-region=east-china]")
        row.find_element(By.CSS_SELECTOR, "button.danger").click()
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "dialog[open]"))
        find(driver, "dialog[open] button[value=yes]").click()
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".error[role=alert]"))
        assert "shanghai-cluster" in problem_text(driver)
        shot(driver, "admin-regions")
        # The fleet shows both registered clusters, with the region's display name once.
        driver.get(f"{console}/fleet")
        tiles = {
            t.get_attribute("data-cluster") for t in driver.find_elements(By.CSS_SELECTOR, ".tile")
        }
        assert tiles == {"shanghai-cluster", "shenzhen-cluster", "store-0042"}

    def people() -> str:
        """A user (their first password shown once), a workspace granted both clusters with
        the user as operator, a service account for Helm; the user's password."""
        driver.get(f"{console}/admin/users")
        fill(driver, "#user-name", "someone")
        find(driver, "#new-user button[type=submit]").click()
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#issued-password"))
        password = find(driver, "#issued-password code").text
        assert driver.find_elements(By.CSS_SELECTOR, "tr[data-user=someone]")

        driver.get(f"{console}/admin/workspaces")
        fill(driver, "#workspace-name", "team-a")
        for name in ("shanghai-cluster", "shenzhen-cluster"):
            find(driver, f"#new-workspace input[value={name}]").click()
        find(driver, "#new-workspace button[type=submit]").click()
        wait(driver, lambda d: d.current_url.endswith("/admin/workspaces/team-a"))
        find(driver, "#member-user").send_keys("someone")
        find(driver, "#add-member button[type=submit]").click()
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "tr[data-member=someone]"))
        role = find(driver, "#role-someone").get_attribute("value")
        assert role == "operator"
        shot(driver, "admin-workspace")

        driver.get(f"{console}/admin/serviceaccounts")
        fill(driver, "#account-name", "helm")
        find(driver, "#new-account button[type=submit]").click()
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#issued-secret"))
        assert "helm repo add edge http://" in find(driver, "#issued-secret pre").text
        # Shown once: the list does not show it again.
        driver.get(f"{console}/admin/serviceaccounts")
        assert not driver.find_elements(By.CSS_SELECTOR, "#issued-secret")
        return password

    def catalog_and_a_rollout() -> None:
        driver.get(f"{console}/catalog")
        assert "No applications yet" in find(driver, "#catalog-empty").text
        find(driver, "#chart-file").send_keys(str(chart_file))
        find(driver, "#upload-chart button[type=submit]").click()
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "tr[data-chart=edge-demo]"))
        # The same version again: the repository refuses it, and the page says why.
        find(driver, "#chart-file").send_keys(str(chart_file))
        find(driver, "#upload-chart button[type=submit]").click()
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".error[role=alert]"))
        assert "exists" in problem_text(driver)
        fill(driver, "#application-name", "monitoring-stack")
        find(driver, "#application-provisioner").send_keys("Plain")
        find(driver, "#new-application button[type=submit]").click()
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#app-monitoring-stack"))
        find(driver, "#app-monitoring-stack summary").click()
        fill(driver, "#version-monitoring-stack", "2.0.0")
        fill(driver, "#image-monitoring-stack", "prom/prometheus:v2.53.0")
        find(driver, "#new-version-monitoring-stack button[type=submit]").click()
        wait(driver, lambda d: d.find_elements(
            By.CSS_SELECTOR, "tr[data-version='monitoring-stack-v2.0.0']"))  # fmt: skip
        shot(driver, "admin-catalog")
        # Deploy this version: the form comes with it chosen.
        find(driver, "tr[data-version='monitoring-stack-v2.0.0'] a.deploy").click()
        wait(driver, lambda d: d.current_url.endswith("version=monitoring-stack-v2.0.0"))
        # The address changes before the new page is parsed: wait for the form itself.
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#version"))
        assert find(driver, "#version").get_attribute("value") == "monitoring-stack-v2.0.0"
        fill(driver, "#name", "cross-region-app")
        for region in ("east-china", "south-china"):
            find(driver, f"input[name=all][value={region}]").click()
            find(driver, f"#nodegroup-{region}").send_keys("monitoring-nodes")
        find(driver, "button[name=action][value=save]").click()
        wait(driver, lambda d: d.current_url.endswith("/deployments/cross-region-app"))
        wait(driver, lambda d: "Ready" in find(d, "#deployment-phase").text, within=60)
        shot(driver, "admin-rollout-ready")
        # The cluster's page lists the rollouts of the workspace that target it.
        driver.get(f"{console}/clusters/shanghai-cluster")
        assert "cross-region-app" in find(driver, "#rollouts-table").text
        assert "Ready" in find(driver, "#rollouts-table").text

    await asyncio.to_thread(from_nothing_to_a_region)
    await asyncio.to_thread(register_clusters)
    await asyncio.to_thread(node_groups_and_refusals)
    password = await asyncio.to_thread(people)
    await asyncio.to_thread(catalog_and_a_rollout)

    # What the browser did is what the API holds.
    async with httpx.AsyncClient(base_url=api_url) as client:
        await authenticated(client)
        region = (await client.get("/api/v1/regions/east-china")).json()
        assert region["spec"]["displayName"] == "East China"
        assert region["metadata"]["labels"] == {"geo": "cn"}
        store = (await client.get("/api/v1/clusters/store-0042")).json()
        assert store["spec"]["connection"]["type"] == "agent"
        group = (await client.get("/api/v1/clusters/shanghai-cluster/nodegroups")).json()
        assert [g["metadata"]["name"] for g in group["items"]] == ["monitoring-nodes"]
        team = (await client.get("/api/v1/workspaces/team-a")).json()
        assert sorted(team["spec"]["clusters"]) == ["shanghai-cluster", "shenzhen-cluster"]
        member = (await client.get("/api/v1/workspaces/team-a/members/someone")).json()
        assert member["role"] == "operator"

    def someone_is_offered_nothing_of_it() -> None:
        driver.delete_all_cookies()
        sign_in(driver, console, "someone", password)
        assert not driver.find_elements(By.CSS_SELECTOR, "#register-link")
        assert not driver.find_elements(By.CSS_SELECTOR, "nav a[href='/admin/regions']")
        # Their workspace's clusters, without the admin's controls.
        driver.get(f"{console}/clusters/shanghai-cluster")
        assert find(driver, "#cluster-phase").text == "Ready"
        assert not driver.find_elements(By.CSS_SELECTOR, "#cluster-actions, #new-nodegroup")
        for path in ("regions", "workspaces", "users", "serviceaccounts", "clusters/new"):
            driver.get(f"{console}/admin/{path}")
            assert "platform admins" in find(driver, "main").text, path

    await asyncio.to_thread(someone_is_offered_nothing_of_it)

    # The fleet page, left open, shows an edge that stops answering as Unreachable.
    def open_the_fleet() -> None:
        driver.get(f"{console}/fleet")
        wait(driver, lambda d: not find(d, "#live").get_attribute("hidden"))

    def turned_unreachable() -> None:
        tile = "#fleet-live .tile.unreachable[data-cluster=shenzhen-cluster]"
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, tile), within=30)
        assert "1 Unreachable" in find(driver, "#fleet-summary").text

    await asyncio.to_thread(open_the_fleet)
    await edges["shenzhen-cluster"].stop()
    await asyncio.to_thread(turned_unreachable)

"""End to end in headless Chromium: sign in, see the fleet, roll out across regions and watch the
matrix turn Ready live, roll back, sign out; a viewer is offered no write; an expired session
goes back to the sign-in page. Screenshots of the key pages land in test-artifacts/console/."""

from __future__ import annotations

import asyncio

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select

from app.console.app import create_console_app
from tests.support.browser import Driver, find, shot, sign_in, wait
from tests.support.console import SESSION_SECRET, Console
from tests.support.deployments import BASE, EXAMPLE_YAML, WORKSPACE, targets_of
from tests.support.platform import ADMIN_PASSWORD
from tests.support.servers import api_server, http_server
from tests.support.tenancy import PASSWORD, add_member, create_user

pytestmark = pytest.mark.slow

GUIDE_REGIONS = {
    "east-china": {"shanghai-cluster", "hangzhou-cluster"},
    "north-china": {"beijing-cluster", "tianjin-cluster"},
    "south-china": {"shenzhen-cluster"},
}


def texts(driver: Driver, css: str) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, css)]


def tiles(driver: Driver) -> dict[str, tuple[str, str]]:
    """cluster: (region, phase) as the fleet page shows them."""
    found = {}
    for region in driver.find_elements(By.CSS_SELECTOR, "section.region"):
        name = region.find_element(By.TAG_NAME, "h2").get_attribute("id").removeprefix("region-")
        for tile in region.find_elements(By.CSS_SELECTOR, "li.tile"):
            phase = tile.find_element(By.CSS_SELECTOR, ".phase").text.split(" ·")[0].strip()
            found[tile.get_attribute("data-cluster")] = (name, phase)
    return found


# The live matrix is redrawn under our feet: read it in one script call, never element by
# element (an element found before a redraw is stale after it).
def matrix(driver: Driver) -> dict[str, str]:
    rows = driver.execute_script(
        "return [...document.querySelectorAll('#matrix tbody tr[data-cluster]')]"
        ".map(r => [r.dataset.cluster, r.dataset.phase, r.innerText])"
    )
    return {cluster: phase for cluster, phase, _ in rows}


def matrix_text(driver: Driver, css: str) -> str:
    return str(driver.execute_script(f"return document.querySelector({css!r}).innerText"))


def deployment_phase(driver: Driver) -> str:
    return matrix_text(driver, "#deployment-phase")


def fill_guide_example(driver: Driver) -> None:
    """The guide's cross-region example, picked region → clusters → node group."""
    find(driver, "#name").send_keys("cross-region-app")
    Select(find(driver, "#version")).select_by_value("monitoring-stack-v2.0.0")
    for region, clusters, group, replicas in (
        ("east-china", ["shanghai-cluster", "hangzhou-cluster"], "monitoring-nodes", "2"),
        ("north-china", ["beijing-cluster"], "production-nodes", "3"),
        ("south-china", ["shenzhen-cluster"], "test-nodes", "1"),
    ):
        for cluster in clusters:
            find(driver, f"input[name=clusters][value='{region}/{cluster}']").click()
        Select(find(driver, f"#nodegroup-{region}")).select_by_value(group)
        find(driver, f"#replicas-{region}").send_keys(replicas)


def confirm_in_dialog(driver: Driver, button: WebElement) -> None:
    button.click()
    dialog = wait(driver, lambda d: d.find_element(By.ID, "confirm-dialog"))
    wait(driver, lambda d: dialog.get_attribute("open") is not None)
    dialog.find_element(By.CSS_SELECTOR, "button[value=yes]").click()


async def test_operator_rolls_out_watches_it_live_rolls_back_and_signs_out(
    console: Console, browser: Driver
) -> None:
    platform = console.platform
    platform.start_controller()  # probes make the clusters Ready
    base = console.url

    def see_the_fleet() -> None:
        sign_in(browser, base, "admin", ADMIN_PASSWORD)
        wait(browser, lambda d: len(tiles(d)) == 5)

        def all_ready(driver: Driver) -> bool:
            driver.refresh()  # the fleet page is not live: reload until the prober saw all
            return {phase for _, phase in tiles(driver).values()} == {"Ready"}

        wait(browser, all_ready)
        shown = tiles(browser)
        regions: dict[str, set[str]] = {}
        for cluster, (region, _) in shown.items():
            regions.setdefault(region, set()).add(cluster)
        assert regions == GUIDE_REGIONS
        summary = find(browser, "#fleet-summary").text
        assert "5 clusters in 3 regions" in summary
        assert "5 Ready" in summary
        assert "monitoring-nodes" in find(browser, "li.tile[data-cluster=shanghai-cluster]").text
        shot(browser, "fleet")

    await asyncio.to_thread(see_the_fleet)

    # Each apply at the edge takes a while, so the page is drawn before anything is Ready.
    for edge in platform.fleet.values():
        edge.apply_delay = 1.5

    def create_from_the_catalog() -> None:
        browser.get(f"{base}/w/{WORKSPACE}/deployments")
        find(browser, "a.button[href$='/deployments/new']").click()
        fill_guide_example(browser)
        find(browser, "button[value=preview]").click()
        wait(browser, lambda d: d.find_elements(By.ID, "preview-table"))
        previewed = texts(browser, "#preview-table tbody th")
        assert sorted(previewed) == sorted(
            ["shanghai-cluster", "hangzhou-cluster", "beijing-cluster", "shenzhen-cluster"]
        )
        shot(browser, "deployment-preview")
        find(browser, "button[value=save]").click()  # the form kept what was picked
        wait(browser, lambda d: d.current_url.endswith("/deployments/cross-region-app"))
        browser.execute_script("window.notReloaded = true")
        assert deployment_phase(browser) != "Ready"
        wait(browser, lambda d: find(d, "#live").is_displayed())  # the stream is open

    await asyncio.to_thread(create_from_the_catalog)

    def watch_it_turn_ready() -> None:
        wait(browser, lambda d: deployment_phase(d) == "Ready", within=60)
        assert browser.execute_script("return window.notReloaded === true"), "page was reloaded"
        assert matrix(browser) == dict.fromkeys(
            ["shanghai-cluster", "hangzhou-cluster", "beijing-cluster", "shenzhen-cluster"],
            "Ready",
        )
        row = matrix_text(browser, "#matrix tr[data-cluster=beijing-cluster]")
        assert "north-china" in row
        assert "production-nodes" in row
        assert "3/3" in row
        shot(browser, "deployment-ready")

    await asyncio.to_thread(watch_it_turn_ready)
    # What the console created is what the guide's YAML describes.
    created = (await platform.client.get(f"{BASE}/cross-region-app")).json()
    assert {t: v["nodeGroup"] for t, v in targets_of(created).items()} == {
        "shanghai-cluster": "monitoring-nodes", "hangzhou-cluster": "monitoring-nodes",
        "beijing-cluster": "production-nodes", "shenzhen-cluster": "test-nodes",
    }  # fmt: skip

    def upgrade_then_roll_back() -> None:
        find(browser, "a.button[href$='/edit']").click()
        Select(find(browser, "#version")).select_by_value("monitoring-stack-v2.1.0")
        find(browser, "button[value=save]").click()
        wait(browser, lambda d: d.current_url.endswith("/deployments/cross-region-app"))
        wait(browser, lambda d: "revision 2" in matrix_text(d, "#matrix .summary"))
        wait(browser, lambda d: deployment_phase(d) == "Ready", within=60)
        button = find(browser, "form[action$='/rollback'] button")
        assert button.text == "Roll back to 1"
        confirm_in_dialog(browser, button)
        wait(browser, lambda d: "revision 3" in matrix_text(d, "#matrix .summary"))
        wait(browser, lambda d: deployment_phase(d) == "Ready", within=60)
        assert "monitoring-stack-v2.0.0" in find(browser, "h1").text
        shot(browser, "deployment-rolled-back")

    await asyncio.to_thread(upgrade_then_roll_back)
    edge = platform.fleet["beijing-cluster"]
    images = {
        c["image"]
        for body in edge.of_kind("deployments").values()
        for c in body["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"prom/prometheus:v2.0.0", "grafana/grafana:2.0.0"}

    def sign_out() -> None:
        find(browser, "form[action='/logout'] button").click()
        wait(browser, lambda d: d.current_url.endswith("/login"))
        browser.get(f"{base}/w/{WORKSPACE}/deployments")
        wait(browser, lambda d: "/login?next=" in d.current_url)
        assert browser.get_cookie("edge_console") is None

    await asyncio.to_thread(sign_out)
    audit = (await platform.client.get("/api/v1/auditlogs", params={"actor": "admin"})).json()
    assert any(e["action"] == "rollback" for e in audit["items"]), audit["items"][:5]


async def test_a_viewer_is_offered_no_write(console: Console, browser: Driver) -> None:
    platform = console.platform
    await create_user(platform.client, "vera")
    await add_member(platform.client, WORKSPACE, "vera", "viewer")
    response = await platform.client.post(
        BASE, content=EXAMPLE_YAML, headers={"Content-Type": "application/yaml"}
    )
    assert response.status_code == 201, response.text
    response = await platform.client.patch(
        f"{BASE}/cross-region-app",
        json={"spec": {"applicationVersionRef": "monitoring-stack-v2.1.0"}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status_code == 200, response.text  # two revisions: rollback is possible
    base = console.url

    def look_around() -> None:
        sign_in(browser, base, "vera", PASSWORD)
        assert "viewer" in find(browser, ".user").text
        browser.get(f"{base}/w/{WORKSPACE}/deployments")
        assert texts(browser, "tbody th a") == ["cross-region-app"]
        assert not browser.find_elements(By.CSS_SELECTOR, "a[href$='/deployments/new']")
        browser.get(f"{base}/w/{WORKSPACE}/deployments/cross-region-app")
        assert find(browser, "#matrix")
        shot(browser, "viewer-deployment")
        for css in ("a[href$='/edit']", "form[action$='/rollback']", "form[action$='/delete']"):
            assert not browser.find_elements(By.CSS_SELECTOR, css), css
        browser.get(f"{base}/w/{WORKSPACE}/vclusters")
        assert not browser.find_elements(By.CSS_SELECTOR, "form[action$='/vclusters']")
        assert not browser.find_elements(By.LINK_TEXT, "Audit log")
        # The write pages themselves say no (and the API would refuse the write anyway).
        browser.get(f"{base}/w/{WORKSPACE}/deployments/new")
        assert "needs the operator role" in find(browser, "main").text
        assert not browser.find_elements(By.CSS_SELECTOR, "form.deployment-form")

    await asyncio.to_thread(look_around)


async def test_an_expired_session_returns_to_sign_in(console: Console, browser: Driver) -> None:
    """Tokens that expire (access and refresh alike) send the browser back to sign in, and it
    returns to the page it wanted."""
    platform = console.platform
    short = platform.settings.model_copy(update={"access_token_ttl": 2.0, "refresh_token_ttl": 4.0})
    async with api_server(short) as api_url:
        # The console's own cookie outlives the tokens in it (as it does when an operator
        # shortens token lifetimes): the API's refusal is what sends the user back.
        settings = platform.settings.model_copy(update={"console_api_url": api_url})
        async with http_server(create_console_app(settings, secret=SESSION_SECRET)) as base:

            def sign_in_then_wait() -> None:
                sign_in(browser, base, "admin", ADMIN_PASSWORD)
                browser.get(f"{base}/catalog")
                assert "monitoring-stack" in find(browser, "main").text

            await asyncio.to_thread(sign_in_then_wait)
            await asyncio.sleep(5.0)  # both tokens have expired

            def come_back() -> None:
                assert browser.get_cookie("edge_console") is not None
                browser.get(f"{base}/catalog")
                wait(browser, lambda d: "/login?next=%2Fcatalog" in d.current_url)
                shot(browser, "login")
                find(browser, "#username").send_keys("admin")
                find(browser, "#password").send_keys(ADMIN_PASSWORD)
                find(browser, ".login button[type=submit]").click()
                wait(browser, lambda d: d.current_url == f"{base}/catalog")

            await asyncio.to_thread(come_back)

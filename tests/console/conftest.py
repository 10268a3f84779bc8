"""The console against a running platform: the API and the console each on their own loopback
port over real HTTP, the guide's five emulated clusters, and Debian's headless Chromium."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from app.console.app import create_console_app
from tests.support.browser import ARTIFACTS
from tests.support.console import SESSION_SECRET, Console
from tests.support.deployments import Platform
from tests.support.guide_fleet import fleet, platform  # noqa: F401 - fixtures
from tests.support.servers import api_server, http_server

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")


@pytest.fixture
async def console(platform: Platform) -> AsyncIterator[Console]:  # noqa: F811 - the fixture
    async with api_server(platform.settings) as api_url:
        settings = platform.settings.model_copy(update={"console_api_url": api_url})
        async with http_server(create_console_app(settings, secret=SESSION_SECRET)) as url:
            yield Console(url, api_url, platform)


def chromium(*, network_log: bool = False) -> webdriver.Chrome:
    """Headless Chromium from the distribution (`.ci/run` installs it); nothing downloads one.
    With `network_log`, the responses it receives can be read back (their headers included)
    from `driver.get_log("performance")`."""
    for path in (CHROMIUM, CHROMEDRIVER):
        assert shutil.which(path), f"{path} is missing: apt-get install chromium chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
        "--window-size=1400,1000", "--no-first-run", "--disable-extensions",
    ):  # fmt: skip
        options.add_argument(argument)
    if network_log:
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
        options.add_experimental_option("perfLoggingPrefs", {"enableNetwork": True})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return driver


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    driver = chromium()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def logged_browser() -> Iterator[webdriver.Chrome]:
    """A browser whose network log the test reads (to see a response's headers)."""
    driver = chromium(network_log=True)
    try:
        yield driver
    finally:
        driver.quit()

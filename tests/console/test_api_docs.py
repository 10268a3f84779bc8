"""`/docs` as a user on an air-gapped site meets it: Swagger UI loads with nothing fetched
beyond the API itself, "Authorize" signs in with the password flow, and "Try it out" then
answers 200. Debian's headless Chromium; every request it makes is read from its network log."""

from __future__ import annotations

import asyncio
import json

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from app.config import Settings
from tests.support.browser import find, shot, wait
from tests.support.platform import ADMIN_PASSWORD
from tests.support.servers import api_server

pytestmark = pytest.mark.slow


def requested_urls(driver: webdriver.Chrome) -> set[str]:
    urls = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.add(message["params"]["request"]["url"])
    return urls


async def test_swagger_ui_works_offline_and_authorizes_with_the_password_flow(
    standalone_settings: Settings, logged_browser: webdriver.Chrome
) -> None:
    driver = logged_browser
    async with api_server(standalone_settings) as base:

        def use_the_docs() -> None:
            driver.get(f"{base}/docs")
            wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".swagger-ui .info .title"))
            assert "Edge Platform" in find(driver, ".swagger-ui .info .title").text

            # Authorize: the password flow's form, with the console's public client filled in.
            find(driver, ".swagger-ui .btn.authorize").click()
            wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#oauth_username"))
            find(driver, "#oauth_username").send_keys("admin")
            find(driver, "#oauth_password").send_keys(ADMIN_PASSWORD)
            assert find(driver, "[id^=client_id_]").get_attribute("value") == "edge-console"
            find(driver, ".auth-btn-wrapper .btn.modal-btn.auth.authorize").click()
            wait(driver, lambda d: d.find_elements(By.XPATH, "//button[text()='Logout']"))
            find(driver, ".btn-done").click()

            # Try it out: who am I, with the token just obtained.
            find(driver, "#operations-users-readCurrentUser .opblock-summary").click()
            wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".try-out__btn"))
            find(driver, ".try-out__btn").click()
            find(driver, ".btn.execute").click()
            wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".live-responses-table"))
            shot(driver, "api-docs-try-it-out")
            status = find(driver, ".live-responses-table .response .response-col_status").text
            body = find(driver, ".live-responses-table .response .microlight").text
            assert status == "200", body
            assert json.loads(body)["metadata"]["name"] == "admin"

            outside = {
                url
                for url in requested_urls(driver)
                if not url.startswith((base, "data:", "blob:"))
            }
            assert outside == set(), f"the docs fetched from outside the API: {outside}"

        await asyncio.to_thread(use_the_docs)

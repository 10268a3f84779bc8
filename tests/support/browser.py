"""The console in headless Chromium via Selenium: waits, lookups, screenshots, signing in."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import (
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", "test-artifacts")) / "console"
Driver = webdriver.Chrome
# How ChromeDriver reports an element of a page being replaced when the new page arrives
# between finding the element and reading it (instead of a stale element).
REPLACED_WHILE_READ = "Node with given id does not belong to the document"


def wait(driver: Driver, condition: Callable[[Driver], Any], within: float = 30.0) -> Any:
    """Until `condition` holds; an element that went stale (the page was replaced while it was
    read, as after a form's redirect) counts as not yet."""

    def attempt(d: Driver) -> Any:
        try:
            return condition(d)
        except WebDriverException as exc:
            if REPLACED_WHILE_READ in (exc.msg or ""):
                return False
            raise

    return WebDriverWait(
        driver, within, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
    ).until(attempt)


def find(driver: Driver, css: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, css)


def shot(driver: Driver, name: str) -> None:
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def sign_in(driver: Driver, base: str, username: str, password: str) -> None:
    driver.get(f"{base}/fleet")
    wait(driver, lambda d: "/login" in d.current_url)
    find(driver, "#username").send_keys(username)
    find(driver, "#password").send_keys(password)
    find(driver, ".login button[type=submit]").click()
    wait(driver, lambda d: d.current_url == f"{base}/fleet")
    # The address changes when the new page starts to arrive, before it is parsed: wait for
    # the signed-in header itself, or the next lookup can run against a page still loading.
    try:
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "header .user"), within=10)
    except TimeoutException:
        shot(driver, f"sign-in-{username}-failed")
        main = driver.find_elements(By.TAG_NAME, "main")
        raise AssertionError(
            f"signed in, but the page says: {main[0].text if main else ''}"
        ) from None

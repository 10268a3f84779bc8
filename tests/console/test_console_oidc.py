"""Signing in to the console through the external OpenID Connect issuer (a real one:
oidc-provider-mock, on loopback), in headless Chromium: the console completes the
authorization code + PKCE flow with the API and keeps the tokens, as for a password; a callback
this browser did not begin is refused; the API accepts no other redirect URI."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from oidc_provider_mock import run_server_in_thread
from selenium import webdriver
from selenium.webdriver.common.by import By

from app.config import Settings
from app.console.app import create_console_app
from app.embedded import free_port
from app.main import create_app
from tests.support.browser import find, shot, wait
from tests.support.console import SESSION_SECRET
from tests.support.servers import http_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def issuer() -> Iterator[str]:
    with run_server_in_thread(require_nonce=True) as server:
        yield f"http://localhost:{server.server_port}"


async def test_a_user_signs_in_to_the_console_at_the_identity_provider(
    standalone_settings: Settings, issuer: str, browser: webdriver.Chrome
) -> None:
    console_port = free_port()
    console_url = f"http://127.0.0.1:{console_port}"
    settings = standalone_settings.model_copy(
        update={
            "oauth_issuer": issuer,
            "oauth_client_secret": "console-secret-for-tests-0123456789",
            "console_public_url": console_url,
            "console_cookie_secure": False,
        }
    )
    async with http_server(create_app(settings)) as api_url:
        console = create_console_app(
            settings.model_copy(update={"console_api_url": api_url}), secret=SESSION_SECRET
        )
        async with http_server(console, port=console_port):

            def sign_in_at_the_issuer() -> None:
                browser.get(f"{console_url}/login")
                find(browser, "#external-login").click()
                wait(browser, lambda d: d.current_url.startswith(issuer))
                find(browser, "input[name=sub]").send_keys("alice@example.com")
                find(browser, "form button[type=submit]").click()
                wait(browser, lambda d: d.current_url == f"{console_url}/fleet")
                wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "header .user"))
                shot(browser, "oidc-signed-in")
                assert "alice" in find(browser, "header .user").text

            await asyncio.to_thread(sign_in_at_the_issuer)

            # A callback this browser did not begin (another's code and state) is refused.
            async with httpx.AsyncClient(base_url=console_url) as stranger:
                forged = await stranger.get(
                    "/login/oidc/callback", params={"code": "x", "state": "y"}
                )
                assert forged.status_code == 403
                assert "not begun here" in forged.text

            # The API sends the issuer back only to the console's own callback.
            async with httpx.AsyncClient(base_url=api_url) as client:
                elsewhere = await client.get(
                    "/oauth/authorize", params={"redirect_uri": "https://evil.example/cb"}
                )
                assert elsewhere.status_code == 400
                assert elsewhere.json()["error"] == "invalid_request"

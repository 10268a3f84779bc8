"""The console under test, and plain-HTTP clients of it that sign in and read its forms."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from app.console.app import create_console_app
from tests.support.deployments import WORKSPACE, Platform
from tests.support.platform import ADMIN_PASSWORD
from tests.support.servers import http_server

SESSION_SECRET = "console-test-session-secret-0123456789abcdef"


@dataclass
class Console:
    url: str
    api_url: str
    platform: Platform


@contextlib.asynccontextmanager
async def console_server(console: Console, **updates: Any) -> AsyncIterator[str]:
    """Another console process, with its cookies not marked Secure; yields its URL."""
    settings = console.platform.settings.model_copy(
        update={"console_api_url": console.api_url, "console_cookie_secure": False} | updates
    )
    async with http_server(create_console_app(settings, secret=SESSION_SECRET)) as url:
        yield url


@contextlib.asynccontextmanager
async def plain_client(console: Console, **updates: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with console_server(console, **updates) as url, httpx.AsyncClient(base_url=url) as client:
        yield client


def hidden(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found, f"no hidden {name!r} field"
    return found.group(1)


async def signed_in(
    client: httpx.AsyncClient, username: str = "admin", password: str = ADMIN_PASSWORD
) -> str:
    """Sign in (as admin unless told); returns the session's CSRF token (as its forms carry it)."""
    form = await client.get("/login")
    response = await client.post(
        "/login",
        data={"csrf": hidden(form.text, "csrf"), "next": "/fleet", "username": username,
              "password": password},
    )  # fmt: skip
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/fleet"
    page = await client.get(f"/w/{WORKSPACE}/deployments")
    assert page.status_code == 200
    return hidden(page.text, "csrf")

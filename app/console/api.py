"""The console's way to the platform: the public HTTP API, called with the user's own token.

Access tokens are refreshed shortly before they expire and once more on a 401; when that fails
too the user must sign in again (`SignInRequired`).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from app.console.session import UserSession

REFRESH_MARGIN = 30.0  # refresh this long before the access token expires


class SignInRequired(Exception):
    """The session has no usable token any more (expired, revoked, or never signed in)."""


class ApiProblem(Exception):
    """The API refused a request; carries its problem+json so the page can show it."""

    def __init__(self, status: int, title: str, detail: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiProblem:
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        title = str(body.get("title") or body.get("error") or response.reason_phrase)
        detail = str(body.get("detail") or body.get("error_description") or "")
        errors = body.get("errors") if isinstance(body.get("errors"), list) else []
        return cls(response.status_code, title, detail, errors or [])


class PlatformApi:
    def __init__(self, http: httpx.AsyncClient, client_id: str) -> None:
        self.http = http
        self.client_id = client_id
        # A page makes calls in parallel; one refresh per session at a time, because the API
        # treats a refresh token used twice as stolen and revokes the whole session.
        self._refreshing: weakref.WeakKeyDictionary[UserSession, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    async def sign_in(self, username: str, password: str) -> UserSession:
        response = await self.http.post(
            "/oauth/token",
            data={
                "grant_type": "password",
                "username": username,
                "password": password,
                "client_id": self.client_id,
            },
        )
        if response.status_code != 200:
            raise ApiProblem.from_response(response)
        body = response.json()
        return UserSession.start(
            username, body["access_token"], body.get("refresh_token"), _expiry(body)
        )

    async def sign_out(self, session: UserSession) -> None:
        """Revoke the refresh token (the whole session family) and the access token."""
        for token in (session.refresh_token, session.access_token):
            if token:
                await self.http.post(
                    "/oauth/revoke", data={"token": token, "client_id": self.client_id}
                )

    async def _refresh(self, session: UserSession, stale: str) -> bool:
        """Replace the access token `stale`; True when the session has a usable one again."""
        lock = self._refreshing.setdefault(session, asyncio.Lock())
        async with lock:
            if session.access_token != stale:
                return True  # another call of this page refreshed it meanwhile
            return await self._refresh_now(session)

    async def _refresh_now(self, session: UserSession) -> bool:
        if not session.refresh_token:
            return False
        response = await self.http.post(
            "/oauth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": session.refresh_token,
                "client_id": self.client_id,
            },
        )
        if response.status_code != 200:
            return False
        body = response.json()
        session.access_token = body["access_token"]
        session.refresh_token = body.get("refresh_token", session.refresh_token)
        session.expires_at = _expiry(body)
        return True

    async def _fresh_token(self, session: UserSession) -> str:
        token = session.access_token
        if session.expires_at - REFRESH_MARGIN < time.time() and not await self._refresh(
            session, token
        ):
            raise SignInRequired
        return session.access_token

    async def request(
        self, session: UserSession, method: str, path: str, **kwargs: Any
    ) -> httpx.Response:
        """One API call as the user; problems (4xx/5xx) are raised as ApiProblem."""
        extra_headers = kwargs.pop("headers", {})
        for attempt in range(2):
            token = await self._fresh_token(session)
            headers = {"Authorization": f"Bearer {token}", **extra_headers}
            response = await self.http.request(method, path, headers=headers, **kwargs)
            if response.status_code == 401:
                # Revoked or expired early (clock skew, a password change): one refresh, then
                # the user signs in again.
                if attempt == 0 and await self._refresh(session, token):
                    continue
                raise SignInRequired
            if response.status_code >= 400:
                raise ApiProblem.from_response(response)
            return response
        raise SignInRequired  # unreachable: the loop returns or raises

    async def get(self, session: UserSession, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v not in (None, "")}
        return (await self.request(session, "GET", path, params=clean)).json()

    async def items(self, session: UserSession, path: str, **params: Any) -> list[Any]:
        """Every item of a list, following `continue` tokens."""
        found: list[Any] = []
        token: str | None = None
        while True:
            page = await self.get(session, path, limit=500, **params, **{"continue": token})
            found.extend(page["items"])
            token = page.get("metadata", {}).get("continue")
            if not token:
                return found

    @asynccontextmanager
    async def stream(self, session: UserSession, path: str) -> AsyncIterator[httpx.Response]:
        """An event stream of the API, read as the user (no read timeout: streams idle)."""
        headers = {
            "Authorization": f"Bearer {await self._fresh_token(session)}",
            "Accept": "text/event-stream",
        }
        timeout = httpx.Timeout(10.0, read=None)
        async with self.http.stream("GET", path, headers=headers, timeout=timeout) as response:
            if response.status_code == 401:
                raise SignInRequired
            if response.status_code >= 400:
                await response.aread()
                raise ApiProblem.from_response(response)
            yield response


def _expiry(token_response: dict[str, Any]) -> float:
    return time.time() + float(token_response.get("expires_in", 300))

"""The console's way to the platform: the public HTTP API, called with the user's own token.

Access tokens are refreshed shortly before they expire and once more on a 401; when the API
refuses the refresh token too, the user must sign in again (`SignInRequired`).

Every call names the browser it is made for (`on_behalf_of`), so that the API's per-address
limits and audit records count the browser rather than the console (app/auth/client_address.py).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from app.client_address import forwarding_headers
from app.console.session import UserSession

REFRESH_MARGIN = 30.0  # refresh this long before the access token expires (at most)
ROTATION_MEMORY = 60.0  # how long a rotation is remembered for requests that raced it


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


@dataclass(frozen=True)
class _Rotation:
    access_token: str
    refresh_token: str | None
    expires_at: float
    lifetime: float
    remembered_until: float


class PlatformApi:
    def __init__(
        self,
        http: httpx.AsyncClient,
        streams: httpx.AsyncClient,
        client_id: str,
        forwarding_secret: str | None = None,
    ) -> None:
        self.http = http
        self.streams = streams  # long-lived event streams get their own connection pool
        self.client_id = client_id
        self._forwarding_secret = forwarding_secret
        self._browser_address: str | None = None
        # The API treats a refresh token presented twice as stolen and revokes the login. A
        # browser sends several requests at once (a page's calls, the live stream, another
        # tab), each with the same cookie: the first refreshes, the others reuse its result.
        self._rotations: dict[str, _Rotation] = {}
        self._rotating: dict[str, asyncio.Lock] = {}

    def on_behalf_of(self, browser_address: str | None) -> PlatformApi:
        """This API as one browser's request uses it: each call names the browser's address,
        proven with the forwarding secret. A shallow copy: the connection pools and the
        bookkeeping of refreshes stay shared with every other request."""
        bound = copy.copy(self)
        bound._browser_address = browser_address
        return bound

    def _forwarded(self) -> dict[str, str]:
        if not self._forwarding_secret or not self._browser_address:
            return {}  # the API counts the console's own address
        return forwarding_headers(self._forwarding_secret, self._browser_address)

    async def sign_in(self, username: str, password: str) -> UserSession:
        response = await self.http.post(
            "/oauth/token",
            data={
                "grant_type": "password",
                "username": username,
                "password": password,
                "client_id": self.client_id,
            },
            headers=self._forwarded(),
        )
        if response.status_code != 200:
            raise ApiProblem.from_response(response)
        body = response.json()
        lifetime = _lifetime(body)
        return UserSession.start(
            username, body["access_token"], body.get("refresh_token"), lifetime
        )

    async def external_sign_in_url(self, redirect_uri: str) -> str:
        """Where the browser goes to sign in at the external issuer: the API keeps the login's
        state and PKCE verifier, and the issuer sends the browser back to `redirect_uri`."""
        response = await self.http.get(
            "/oauth/authorize", params={"redirect_uri": redirect_uri}, headers=self._forwarded()
        )
        if response.status_code != 302:
            raise ApiProblem.from_response(response)
        return response.headers["location"]

    async def complete_external_sign_in(self, code: str, state: str) -> UserSession:
        """The issuer's answer exchanged for the platform's tokens, which stay here."""
        response = await self.http.get(
            "/oauth/callback", params={"code": code, "state": state}, headers=self._forwarded()
        )
        if response.status_code != 200:
            raise ApiProblem.from_response(response)
        body = response.json()
        me = await self.http.get(
            "/api/v1/users/me", headers={"Authorization": f"Bearer {body['access_token']}"}
        )
        if me.status_code != 200:
            raise ApiProblem.from_response(me)
        return UserSession.start(
            me.json()["metadata"]["name"], body["access_token"], body.get("refresh_token"),
            _lifetime(body),
        )  # fmt: skip

    async def sign_out(self, session: UserSession) -> None:
        """Revoke the refresh token (the whole login) and the access token."""
        for token in (session.refresh_token, session.access_token):
            if token:
                await self.http.post(
                    "/oauth/revoke",
                    data={"token": token, "client_id": self.client_id},
                    headers=self._forwarded(),
                )

    async def _refresh(self, session: UserSession) -> None:
        """New tokens for `session`, or SignInRequired when the API refuses its refresh token."""
        if not session.refresh_token:
            raise SignInRequired
        key = hashlib.sha256(session.refresh_token.encode()).hexdigest()
        lock = self._rotating.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                done = self._rotations.get(key)
                if done is None:
                    done = await self._rotate(session.refresh_token)
                    self._rotations[key] = done
        finally:
            self._forget_old_rotations()
        session.access_token = done.access_token
        session.refresh_token = done.refresh_token
        session.expires_at = done.expires_at
        session.lifetime = done.lifetime

    async def _rotate(self, refresh_token: str) -> _Rotation:
        response = await self.http.post(
            "/oauth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
                "client_id": self.client_id,
            },
            headers=self._forwarded(),
        )
        if response.status_code in (400, 401):
            raise SignInRequired  # invalid_grant: expired, revoked or reused
        if response.status_code != 200:
            raise ApiProblem.from_response(response)  # the API is unwell; the login is not
        body = response.json()
        lifetime = _lifetime(body)
        now = time.time()
        return _Rotation(
            body["access_token"], body.get("refresh_token", refresh_token), now + lifetime,
            lifetime, now + ROTATION_MEMORY,
        )  # fmt: skip

    def _forget_old_rotations(self) -> None:
        now = time.time()
        for key in [k for k, r in self._rotations.items() if r.remembered_until < now]:
            del self._rotations[key]
        for key in [k for k, lock in self._rotating.items() if not lock.locked()]:
            if key not in self._rotations:  # failed, or forgotten: nobody waits on it
                del self._rotating[key]

    async def _fresh_token(self, session: UserSession) -> str:
        margin = min(REFRESH_MARGIN, session.lifetime / 4)
        if session.expires_at - margin < time.time():
            await self._refresh(session)
        return session.access_token

    async def request(
        self, session: UserSession, method: str, path: str, **kwargs: Any
    ) -> httpx.Response:
        """One API call as the user; problems (4xx/5xx) are raised as ApiProblem."""
        extra_headers = kwargs.pop("headers", {})
        for attempt in range(2):
            token = await self._fresh_token(session)
            headers = {"Authorization": f"Bearer {token}", **self._forwarded(), **extra_headers}
            response = await self.http.request(method, path, headers=headers, **kwargs)
            if response.status_code == 401 and attempt == 0:
                # Expired early (clock skew) or the login was revoked: one refresh tells which.
                await self._refresh(session)
                continue
            if response.status_code == 401:
                raise SignInRequired
            if response.status_code >= 400:
                raise ApiProblem.from_response(response)
            return response
        raise SignInRequired  # unreachable: the loop returns or raises

    async def get(self, session: UserSession, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None and v != ""}
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
    async def stream(
        self, session: UserSession, path: str, last_event_id: str | None
    ) -> AsyncIterator[httpx.Response]:
        """An event stream of the API, read as the user (no read timeout: streams idle).
        Refusals are raised before anything is relayed, so the browser sees their status."""
        headers = {
            "Authorization": f"Bearer {await self._fresh_token(session)}",
            "Accept": "text/event-stream",
            **self._forwarded(),
        }
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        timeout = httpx.Timeout(10.0, read=None)
        async with self.streams.stream("GET", path, headers=headers, timeout=timeout) as response:
            if response.status_code == 401:
                raise SignInRequired
            if response.status_code >= 400:
                await response.aread()
                raise ApiProblem.from_response(response)
            yield response


def _lifetime(token_response: dict[str, Any]) -> float:
    return float(token_response.get("expires_in", 300))

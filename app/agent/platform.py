"""The agent's HTTP calls to the platform: joining with a join token (once) and replacing its
credential (rotation). Through the outbound proxy of the environment (`HTTPS_PROXY`,
`NO_PROXY`: an edge site commonly has one), redirects not followed (the token or credential
would go where the redirect says), answers bounded."""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from app.agent.exchange import cleaned
from app.agent.settings import AGENT_VERSION, CREDENTIAL_PATH, JOIN_PATH, AgentSettings
from app.config import ConfigError

CALL_TIMEOUT = aiohttp.ClientTimeout(total=30.0, sock_connect=10.0)
MAX_ANSWER_BYTES = 64 * 1024
MAX_RETRY_AFTER_SECONDS = 300.0


class PlatformRefused(Exception):
    """The platform refused the token or credential (401, 403, 400, 422): asking again with
    the same one will not help."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class PlatformUnavailable(Exception):
    """No answer, or one that passes (429, 5xx, …): ask again later (`retry_after` seconds,
    when the platform said)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Issued:
    credential: str = field(repr=False)
    rotate_after_seconds: int
    cluster: str | None


def platform_ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """The platform's certificate checked against `ca_file` alone when given (a private CA),
    otherwise against the system's CAs."""
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"the platform CA file {ca_file} cannot be loaded: {exc}") from None


class PlatformClient:
    def __init__(self, settings: AgentSettings, ssl_context: ssl.SSLContext | None) -> None:
        self._settings = settings
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> PlatformClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl or True),
                trust_env=True,  # HTTPS_PROXY / NO_PROXY: the way out of the site
                timeout=CALL_TIMEOUT,
                headers={"User-Agent": f"edge-agent/{AGENT_VERSION}"},
            )
        return self._session

    async def join(self, token: str) -> Issued:
        """The join token (single use) for the cluster's credential."""
        return await self._call(JOIN_PATH, {"token": token, "version": AGENT_VERSION}, None)

    async def rotate(self, credential: str) -> Issued:
        """A new credential for the current one (which works until the new one connects)."""
        return await self._call(CREDENTIAL_PATH, {}, f"Bearer {credential}")

    async def _call(self, path: str, body: dict[str, Any], authorization: str | None) -> Issued:
        url = self._settings.platform_endpoint(path)
        headers = {"Accept": "application/json"}
        if authorization is not None:
            headers["Authorization"] = authorization
        try:
            async with self._client().post(
                url, json=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                retry_after = response.headers.get("Retry-After")
                answer = await response.content.read(MAX_ANSWER_BYTES + 1)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise PlatformUnavailable(
                f"POST {url}: {type(exc).__name__}: {cleaned(str(exc))}"
            ) from exc
        if status == 200 and len(answer) <= MAX_ANSWER_BYTES:
            return _issued(url, answer)
        said = _problem(answer)
        if status in (400, 401, 403, 422):
            raise PlatformRefused(status, f"POST {url}: HTTP {status}{said}")
        if status == 404:
            raise PlatformUnavailable(f"POST {url}: HTTP 404: is the platform's address right?")
        if 300 <= status <= 399:
            raise PlatformUnavailable(
                f"POST {url}: HTTP {status}: a redirect, not followed; is the platform's "
                "address right (https, path)?"
            )
        raise PlatformUnavailable(
            f"POST {url}: HTTP {status}{said}", retry_after_seconds(retry_after)
        )


def _issued(url: str, answer: bytes) -> Issued:
    try:
        document = json.loads(answer)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise PlatformUnavailable(f"POST {url}: the answer is not a JSON object")
    credential = document.get("credential")
    rotate_after = document.get("rotateAfterSeconds")
    cluster = document.get("cluster")
    if not isinstance(credential, str) or not credential or any(c.isspace() for c in credential):
        raise PlatformUnavailable(f"POST {url}: the answer has no usable credential")
    if isinstance(rotate_after, bool) or not isinstance(rotate_after, int) or rotate_after <= 0:
        raise PlatformUnavailable(f"POST {url}: the answer's rotateAfterSeconds is not valid")
    return Issued(
        credential, rotate_after, cleaned(cluster, 253) if isinstance(cluster, str) else None
    )


def _problem(answer: bytes) -> str:
    """The title and detail of an application/problem+json answer, cleaned: ': …' or ''."""
    try:
        document = json.loads(answer)
    except ValueError:
        return ""
    if not isinstance(document, dict):
        return ""
    parts = [document.get(key) for key in ("title", "detail")]
    text = ": ".join(part for part in parts if isinstance(part, str) and part)
    return f": {cleaned(text)}" if text else ""


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is not used by the platform), bounded."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)

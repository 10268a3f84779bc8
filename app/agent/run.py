"""The agent's life: find its credential (or join with the join token), replace it when it is
due, connect, serve the platform's exchanges until the connection ends, wait, connect again.

- Joining happens only when no credential is stored, or when the platform refused the stored
  one (401/403 at the handshake: the cluster was deleted or joined again) and the configured
  join token is a new one (its SHA-256 differs from the one the credential came with, and the
  platform has not refused it). Otherwise the agent keeps trying with backoff: an operator may
  install a new token (the Secret directory's file is read again each time).
- Rotation: when the credential is older than the platform said (`rotateAfterSeconds`),
  checked before each connection and while connected; the new credential is stored before it
  is used, and the old one works until the new one connects, so a failure at any step leaves
  a valid credential stored.
- Waits between attempts: capped exponential backoff with full jitter (1 s, doubling to 60 s;
  back to 1 s once a connection stayed up 30 s); every failure waits, none loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import signal
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus
from websockets.frames import CloseCode

from app.agent.exchange import ExchangeHandler, cleaned
from app.agent.kubeapi import LocalApiClient, load_local_api_server
from app.agent.platform import (
    PlatformClient,
    PlatformRefused,
    PlatformUnavailable,
    platform_ssl_context,
    retry_after_seconds,
)
from app.agent.settings import AGENT_VERSION, AgentSettings, token_digest
from app.agent.store import (
    CredentialStore,
    FileCredentialStore,
    SecretCredentialStore,
    StoredCredential,
    StoreError,
)
from app.agent.tunnel import WebSocketTransport, open_tunnel
from app.config import ConfigError
from app.tunnel.protocol import SUBPROTOCOL_V2, Mux, ProtocolError, TunnelClosed

logger = logging.getLogger(__name__)


class Backoff:
    """Capped exponential backoff with full jitter: the n-th wait in a row is drawn uniformly
    from [0, min(cap, base·2ⁿ)], so agents cut off together do not come back together."""

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        self._base = base
        self._cap = cap
        self._rng = rng or random.Random()
        self._failures = 0

    def next(self) -> float:
        ceiling = min(self._cap, self._base * 2 ** min(self._failures, 32))
        self._failures += 1
        return self._rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        self._failures = 0


class CredentialRevoked(Exception):
    """The platform refused the credential (HTTP 401/403)."""


class NoJoinToken(Exception):
    """Joining is needed and there is no join token to join with (or it was refused)."""


@dataclass(frozen=True)
class Connected:
    """How a connection went: how long it stayed up, and whether it ended to use a newly
    rotated credential (then the agent connects again at once)."""

    uptime: float
    rotated: bool


class Agent:
    def __init__(
        self,
        settings: AgentSettings,
        *,
        local: LocalApiClient,
        store: CredentialStore,
        platform: PlatformClient,
        platform_ssl: ssl.SSLContext | None,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._local = local
        self._store = store
        self._platform = platform
        self._platform_ssl = platform_ssl
        self._exchanges = ExchangeHandler(local)
        self._backoff = Backoff(
            settings.reconnect_base_seconds, settings.reconnect_max_seconds, rng
        )
        self._revoked: StoredCredential | None = None  # the credential the platform refused
        self._refused_tokens: set[str] = set()  # digests of join tokens the platform refused
        self._unsaved: StoredCredential | None = None  # joined, not stored yet

    async def run(self) -> None:
        """Connect and serve for ever (until cancelled)."""
        while True:
            retry_after: float | None = None
            try:
                connected = await self._attempt()
            except CredentialRevoked as exc:
                logger.error(
                    "the platform refused the agent's credential (HTTP %s): the cluster was "
                    "deleted or joined again on the platform; %s",
                    exc,
                    self._after_revocation(),
                )
            except NoJoinToken as exc:
                logger.error("%s", exc)
            except PlatformUnavailable as exc:
                logger.warning("the platform cannot be used now: %s", exc)
                retry_after = exc.retry_after
            except StoreError as exc:
                logger.error("the agent's credential store: %s", exc)
            except Exception as exc:  # refused connections, timeouts, TLS, handshake errors
                logger.warning("connecting to the platform failed: %s", _described(exc))
            else:
                if connected.rotated:
                    self._backoff.reset()
                    continue
                if connected.uptime >= self._settings.stable_connection_seconds:
                    self._backoff.reset()
            delay = self._backoff.next()
            if retry_after is not None:
                delay = max(delay, retry_after)
            logger.info("trying again in %.1f s", delay)
            await asyncio.sleep(delay)

    async def _attempt(self) -> Connected:
        stored = await self._credential()
        if stored.rotation_due():
            stored = await self._rotate(stored)
        return await self._connect_and_serve(stored)

    # the credential ----------------------------------------------------------------------

    async def _credential(self) -> StoredCredential:
        """The credential to connect with, joining when that is needed and possible."""
        if self._unsaved is not None:
            await self._store.save(self._unsaved)
            self._unsaved = None
        stored = await self._store.load()
        if stored is not None and (
            self._revoked is None or stored.credential != self._revoked.credential
        ):
            return stored
        token = self._settings.join_token.current()
        digest = token_digest(token) if token is not None else None
        if stored is not None and (
            digest is None or digest == stored.join_token_digest or digest in self._refused_tokens
        ):
            # Refused, and no new token to join with: the credential is tried again (with
            # backoff) until an operator installs one, or the platform takes it back.
            return stored
        if token is None or digest is None:
            raise NoJoinToken(
                f"no credential is kept in the {self._store.description} and no join token is "
                "configured: give one (--token, EDGE_AGENT_TOKEN or the Secret's key token)"
            )
        if digest in self._refused_tokens:
            raise NoJoinToken(
                "the platform refused the configured join token (wrong, expired or used "
                "already): install a new one"
            )
        return await self._join(token, digest)

    async def _join(self, token: str, digest: str) -> StoredCredential:
        logger.info("joining the platform at %s with the join token", self._settings.platform_url)
        try:
            issued = await self._platform.join(token)
        except PlatformRefused as exc:
            self._refused_tokens.add(digest)
            raise NoJoinToken(
                f"the platform refused the join token ({exc}): it is wrong, expired or used "
                "already; install a new one"
            ) from None
        joined = StoredCredential(
            credential=issued.credential,
            cluster=issued.cluster or "",
            issued_at=datetime.now(UTC),
            rotate_after_seconds=issued.rotate_after_seconds,
            join_token_digest=digest,
        )
        # The token is spent: the credential is kept before anything else (and kept trying
        # to keep, before each attempt, if that fails now).
        self._unsaved = joined
        await self._store.save(joined)
        self._unsaved = None
        self._revoked = None
        logger.info(
            "joined the platform as cluster %s; the credential is kept in the %s",
            joined.cluster or "(unnamed)",
            self._store.description,
        )
        return joined

    async def _rotate(self, stored: StoredCredential) -> StoredCredential:
        """A new credential, stored, when the platform gives one; otherwise the current one
        (which stays valid: the platform retires it only once the new one connects)."""
        logger.info("the credential is due for replacement; asking the platform for a new one")
        try:
            issued = await self._platform.rotate(stored.credential)
        except PlatformRefused as exc:
            if exc.status in (401, 403):
                self._revoked = stored
                raise CredentialRevoked(exc.status) from None
            logger.warning("replacing the credential was refused (%s); keeping it", exc)
            return stored
        except PlatformUnavailable as exc:
            logger.warning("replacing the credential failed (%s); keeping it", exc)
            return stored
        rotated = dataclasses.replace(
            stored,
            credential=issued.credential,
            issued_at=datetime.now(UTC),
            rotate_after_seconds=issued.rotate_after_seconds,
            cluster=issued.cluster or stored.cluster,
        )
        try:
            await self._store.save(rotated)
        except StoreError as exc:
            logger.error(
                "the new credential could not be kept (%s); the current one is kept, valid "
                "until a new one is used",
                exc,
            )
            return stored
        logger.info(
            "credential replaced; the next replacement is due in %d s", issued.rotate_after_seconds
        )
        return rotated

    def _after_revocation(self) -> str:
        """What the agent does next, said after the platform refused its credential."""
        token = self._settings.join_token.current()
        if token is None:
            return "no join token is configured: install one (issued by the platform) to join again"
        digest = token_digest(token)
        if digest in self._refused_tokens:
            return "the configured join token was refused as well: install a new one"
        if self._revoked is not None and digest == self._revoked.join_token_digest:
            return (
                "the configured join token is the one used already: install a new one (the "
                "credential is tried again meanwhile)"
            )
        return "joining again with the configured (new) join token"

    # the connection ----------------------------------------------------------------------

    async def _connect_and_serve(self, stored: StoredCredential) -> Connected:
        kubernetes_version = await self._local.git_version()  # before: HELLO is not held up
        try:
            websocket = await open_tunnel(self._settings, stored.credential, self._platform_ssl)
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                self._revoked = stored
                raise CredentialRevoked(status) from None
            if status == 429 or status >= 500:  # busy (a fleet reconnecting): as it says
                retry_after = retry_after_seconds(exc.response.headers.get("Retry-After"))
                raise PlatformUnavailable(f"the tunnel: HTTP {status}", retry_after) from None
            raise
        self._revoked = None
        connected_at = time.monotonic()
        logger.info(
            "connected to the platform at %s as cluster %s",
            self._settings.platform_url,
            stored.cluster or "(unnamed)",
        )
        transport = WebSocketTransport(websocket)
        mux = Mux(
            transport, on_open=self._exchanges, end_flag=websocket.subprotocol == SUBPROTOCOL_V2
        )
        rotation = asyncio.create_task(self._rotate_while_connected(stored, websocket))
        ended = "the connection ended"
        close: tuple[int, str] = (CloseCode.NORMAL_CLOSURE, "")
        try:
            await mux.hello({"version": AGENT_VERSION, "kubernetesVersion": kubernetes_version})
            await mux.run()
        except TunnelClosed as exc:  # from the HELLO: the connection is gone at once
            ended = str(exc)
        except ProtocolError as exc:
            ended = f"the platform broke the protocol: {exc}"
            close = (CloseCode.PROTOCOL_ERROR, "protocol error")
        except asyncio.CancelledError:
            close = (CloseCode.GOING_AWAY, "the agent is stopping")
            raise
        finally:
            rotation.cancel()
            mux.close(TunnelClosed("the connection ended"))  # requests in progress cancelled
            await mux.wait_handlers()
            await asyncio.wait({rotation})
            with contextlib.suppress(Exception):
                await websocket.close(*close)
        uptime = time.monotonic() - connected_at
        if transport.ended is not None:
            ended = transport.ended
        logger.info("the connection to the platform ended after %.0f s: %s", uptime, ended)
        rotated = not rotation.cancelled() and rotation.exception() is None and rotation.result()
        return Connected(uptime=uptime, rotated=bool(rotated))

    async def _rotate_while_connected(
        self, stored: StoredCredential, websocket: ClientConnection
    ) -> bool:
        """Replace the credential once due; then close the connection, for the agent to
        connect with the new one (which retires the old). False: it was refused."""
        check = self._settings.rotation_check_seconds
        delay = max(1.0, stored.seconds_until_rotation())
        while True:
            await asyncio.sleep(min(check, delay))
            if not stored.rotation_due():
                delay = max(1.0, stored.seconds_until_rotation())
                continue
            try:
                rotated = await self._rotate(stored)
            except CredentialRevoked:
                # The platform drops this connection as well; the next handshake says more.
                logger.error("the platform refused the credential while replacing it")
                return False
            if rotated is stored:
                delay = check  # failed (logged): tried again at the next check
                continue
            await websocket.close(CloseCode.NORMAL_CLOSURE, "credential replaced")
            return True


def _described(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {cleaned(text, 300)}" if text else type(exc).__name__


def credential_store(settings: AgentSettings, local: LocalApiClient) -> CredentialStore:
    """In a pod, a Secret of the pod's namespace; elsewhere, the state file."""
    if local.api.in_cluster:
        namespace = settings.namespace or local.api.namespace
        if not namespace:
            raise ConfigError(
                "the pod's namespace is unknown (set POD_NAMESPACE from the downward API)"
            )
        return SecretCredentialStore(local, namespace, settings.credential_secret)
    return FileCredentialStore(settings.state_file)


async def run_agent(settings: AgentSettings, *, rng: random.Random | None = None) -> None:
    """The agent, until cancelled. Settings that cannot work raise ConfigError at once."""
    local_api = load_local_api_server(settings.kubeconfig)
    platform_ssl = platform_ssl_context(settings.platform_ca_file) if settings.encrypted else None
    if not settings.encrypted:
        logger.warning(
            "the platform's address %s is plain http: the credential and the cluster's data "
            "travel unencrypted; use https outside development",
            settings.platform_url,
        )
    async with (
        LocalApiClient(local_api) as local,
        PlatformClient(settings, platform_ssl) as platform,
    ):
        store = credential_store(settings, local)
        logger.info(
            "edge agent %s: platform %s, API server %s (%s), credential kept in the %s, "
            "join token %s",
            AGENT_VERSION,
            settings.platform_url,
            local_api.server,
            local_api.source,
            store.description,
            settings.join_token.describe(),
        )
        agent = Agent(
            settings,
            local=local,
            store=store,
            platform=platform,
            platform_ssl=platform_ssl,
            rng=rng,
        )
        await agent.run()


def run_command(settings: AgentSettings) -> None:
    """`edge-platform agent`: run until SIGTERM or SIGINT, then stop cleanly (the WebSocket
    closed with a close frame, requests in progress cancelled)."""

    async def until_signalled() -> None:
        task = asyncio.create_task(run_agent(settings))
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, task.cancel)
        await asyncio.wait({task})
        if task.cancelled():
            logger.info("edge agent stopped")
            return
        task.result()  # a configuration error: said by the command

    asyncio.run(until_signalled())

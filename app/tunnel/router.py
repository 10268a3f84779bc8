"""What edge agents call: joining (a join token for a credential), replacing the credential, and
the tunnel itself (routed ahead of the API's middleware by `TunnelRoutes`: a WebSocket that
lives for days, and the controller's relayed calls, are not API requests of a principal)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from app.audit.service import Actor, RequestInfo, record
from app.auth.ratelimit import RateLimiter
from app.auth.schemes import AGENT
from app.cache import ObjectCache
from app.client_address import client_address
from app.clusters import agents
from app.clusters.schemas import cluster_cache_key, cluster_document
from app.config import Settings
from app.db.base import resource_version_seq
from app.db.session import SessionDep, after_commit
from app.errors import Unauthorized
from app.kit import responses
from app.models.clusters import Cluster
from app.tunnel.hub import TUNNEL_PATH
from app.tunnel.proxy import PROXY_PREFIX

router = APIRouter(prefix="/api/v1/agent", tags=["agents"])


class JoinRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(max_length=agents.MAX_SECRET_CHARS, description="The join token.")
    version: str | None = Field(None, max_length=64, description="The agent's version.")


class AgentCredential(BaseModel):
    cluster: str = Field(description="The cluster this credential serves.")
    credential: str = Field(description="Shown once: stored hashed. Keep it in a Secret.")
    rotateAfterSeconds: int = Field(description="Replace it (POST /credential) after this.")


async def _limit(request: Request) -> None:
    """Join and rotation attempts per client address: guessing is bounded (429)."""
    limiter: RateLimiter = request.app.state.rate_limiter
    address = client_address(request) or "unknown"
    await limiter.check(f"agent:{address}", limiter.token_per_minute)


@router.post(
    "/join",
    operation_id="joinAgent",
    response_model=AgentCredential,
    responses={401: responses.COMMON_ERRORS[401], 429: responses.COMMON_ERRORS[429]},
    dependencies=[Depends(_limit)],
)
async def join(
    request: Request, body: JoinRequest, session: SessionDep, response: Response
) -> AgentCredential:
    """An agent exchanges its cluster's join token (single use) for the cluster's credential."""
    settings: Settings = request.app.state.settings
    joined = await agents.join(session, body.token)
    if joined is None:
        await _record_refusal(request, "join")
        raise Unauthorized("the join token is not valid: wrong, expired or used already")
    row, credential = joined
    await _changed(request, session, row)  # status.agent.joined
    _record(session, request, "join", row.name)
    response.headers["Cache-Control"] = "no-store"
    return AgentCredential(
        cluster=row.name,
        credential=credential,
        rotateAfterSeconds=int(settings.agent_credential_rotation),
    )


@router.post(
    "/credential",
    operation_id="rotateAgentCredential",
    response_model=AgentCredential,
    responses={401: responses.COMMON_ERRORS[401], 429: responses.COMMON_ERRORS[429]},
    dependencies=[Depends(_limit)],
    openapi_extra={"security": AGENT},  # the credential is read below
)
async def rotate(
    request: Request,
    session: SessionDep,
    response: Response,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> AgentCredential:
    """An agent replaces its credential (the current one, as a bearer token); the old one
    works until the agent connects with the new one."""
    settings: Settings = request.app.state.settings
    scheme, _, credential = (authorization or "").partition(" ")
    rotated = (
        await agents.rotate(session, credential.strip()) if scheme.lower() == "bearer" else None
    )
    if rotated is None:
        await _record_refusal(request, "rotate-credential")
        raise Unauthorized("the agent credential is not valid (revoked or wrong)")
    row, new = rotated
    _record(session, request, "rotate-credential", row.name)
    response.headers["Cache-Control"] = "no-store"
    return AgentCredential(
        cluster=row.name, credential=new, rotateAfterSeconds=int(settings.agent_credential_rotation)
    )


async def _changed(request: Request, session: AsyncSession, row: Cluster) -> None:
    """A new resourceVersion for the cluster, and its cached copy replaced once committed."""
    row.resource_version = int(await session.scalar(resource_version_seq.next_value()))
    version, document = row.resource_version, cluster_document(row)
    cache: ObjectCache = request.app.state.cache

    async def publish() -> None:
        await cache.put(cluster_cache_key(row.name), version, document)

    after_commit(session, publish)


def _record(session: AsyncSession, request: Request, action: str, cluster: str) -> None:
    """A join or rotation, recorded in the transaction that makes it."""
    actor = Actor(f"agent:{cluster}", "agent")
    info = RequestInfo.of(request)
    record(session, info, actor, action=action, outcome=200, kind="Cluster", name=cluster)


async def _record_refusal(request: Request, action: str) -> None:
    """A refused attempt, in a transaction of its own (the request's changes nothing)."""
    async with request.app.state.sessionmaker.begin() as session:
        actor = Actor("anonymous", "anonymous")
        record(session, RequestInfo.of(request), actor, action=action, outcome=401, kind="Cluster")


class TunnelRoutes:
    """The tunnel's WebSocket and the controller's relayed calls, answered before the API's
    middleware (body buffering, per-principal limits, request metrics) sees them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        state = scope["app"].state if "app" in scope else None
        if state is not None and getattr(state, "tunnel_hub", None) is not None:
            if scope["type"] == "websocket" and path == TUNNEL_PATH:
                await state.tunnel_hub.serve(WebSocket(scope, receive, send))
                return
            if scope["type"] == "http" and path.startswith(PROXY_PREFIX):
                await state.tunnel_proxy(scope, receive, send)
                return
        await self.app(scope, receive, send)

"""Edge clusters behind NAT join through an agent: a join token (single use, expiring, shown
once) is exchanged by the agent for a credential of its own cluster, which it then presents on
every tunnel connection and replaces periodically. Only digests are stored.

Issuing a join token revokes the cluster's current credential: whoever holds it can no longer
connect, and the API replica holding its tunnel drops it (app.tunnel.hub checks)."""

from __future__ import annotations

import hashlib
import secrets
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.clusters import Cluster

JOIN_TOKEN_PREFIX = "edge-join-"  # noqa: S105 (a prefix that names the kind of secret)
CREDENTIAL_PREFIX = "edge-agent-"
# The agent's chart, served by the platform's own chart repository (charts/builtin).
AGENT_CHART = "edge-agent"
AGENT_CHART_VERSION = "0.1.0"
# Helm fetches the agent's chart with Basic credentials: this user name and the join token.
JOIN_CHART_USERNAME = "agent-join"
MAX_SECRET_CHARS = 256


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class JoinToken:
    token: str
    expires_at: datetime
    command: str


def join_command(public_url: str, token: str) -> str:
    """The one command that joins a cluster: Helm installs the agent's chart from the
    platform's repository (the join token lets Helm read that chart, nothing else)."""
    url = public_url.rstrip("/")
    quoted_url, quoted_token = shlex.quote(url), shlex.quote(token)
    return (
        f"helm install edge-agent {AGENT_CHART} --repo {shlex.quote(url + '/chartrepo')}"
        f" --version {AGENT_CHART_VERSION}"
        f" --username {JOIN_CHART_USERNAME} --password {quoted_token}"
        " --namespace edge-agent --create-namespace"
        f" --set platformUrl={quoted_url} --set joinToken={quoted_token}"
    )


def issue_join_token(row: Cluster, *, public_url: str, ttl_seconds: float) -> JoinToken:
    """A new join token for `row` (the previous one, and the agent's credential, stop
    working); the caller commits."""
    token = _new_secret(JOIN_TOKEN_PREFIX)
    expires_at = _now() + timedelta(seconds=ttl_seconds)
    row.agent_join_token_hash = digest(token)
    row.agent_join_token_expires_at = expires_at
    revoke_credentials(row)
    return JoinToken(token, expires_at, join_command(public_url, token))


def revoke_credentials(row: Cluster) -> None:
    row.agent_credential_hash = None
    row.agent_credential_previous_hash = None
    row.agent_credential_issued_at = None


async def join(session: AsyncSession, token: str) -> tuple[Cluster, str] | None:
    """Exchange a join token for the cluster's credential: (cluster, credential), or None when
    the token is wrong, expired, used or its cluster is not an enabled agent cluster."""
    if not token.startswith(JOIN_TOKEN_PREFIX) or len(token) > MAX_SECRET_CHARS:
        return None
    row = await session.scalar(
        select(Cluster).where(Cluster.agent_join_token_hash == digest(token)).with_for_update()
    )
    if row is None or not _joinable(row):
        return None
    credential = _new_secret(CREDENTIAL_PREFIX)
    row.agent_join_token_hash = None  # single use
    row.agent_join_token_expires_at = None
    row.agent_credential_hash = digest(credential)
    row.agent_credential_previous_hash = None
    row.agent_credential_issued_at = _now()
    return row, credential


async def join_token_cluster(session: AsyncSession, token: str) -> str | None:
    """The cluster a join token is valid for now (it is not used up by this question)."""
    if not token.startswith(JOIN_TOKEN_PREFIX) or len(token) > MAX_SECRET_CHARS:
        return None
    row = await session.scalar(
        select(Cluster).where(Cluster.agent_join_token_hash == digest(token))
    )
    return row.name if row is not None and _joinable(row) else None


def _joinable(row: Cluster) -> bool:
    expires = row.agent_join_token_expires_at
    return (
        row.enabled and row.connection_type == "agent" and expires is not None and expires > _now()
    )


async def rotate(session: AsyncSession, credential: str) -> tuple[Cluster, str] | None:
    """Replace the cluster's current credential; the one replaced is still accepted until
    the agent connects with the new one (it may not have stored it yet)."""
    if not credential.startswith(CREDENTIAL_PREFIX) or len(credential) > MAX_SECRET_CHARS:
        return None
    row = await session.scalar(
        select(Cluster).where(Cluster.agent_credential_hash == digest(credential)).with_for_update()
    )
    if row is None or not row.enabled or row.connection_type != "agent":
        return None
    new = _new_secret(CREDENTIAL_PREFIX)
    row.agent_credential_previous_hash = row.agent_credential_hash
    row.agent_credential_hash = digest(new)
    row.agent_credential_issued_at = _now()
    return row, new


async def authenticate(session: AsyncSession, credential: str) -> tuple[Cluster, str] | None:
    """The cluster an agent's credential belongs to, and the digest it matched; None for a
    wrong or revoked one, or a cluster that is disabled or no longer reached by agent."""
    if not credential.startswith(CREDENTIAL_PREFIX) or len(credential) > MAX_SECRET_CHARS:
        return None
    hashed = digest(credential)
    row = await session.scalar(
        select(Cluster).where(
            or_(
                Cluster.agent_credential_hash == hashed,
                Cluster.agent_credential_previous_hash == hashed,
            )
        )
    )
    if row is None or not row.enabled or row.connection_type != "agent":
        return None
    return row, hashed


class CredentialState(Protocol):
    """What decides whether an agent's connection may go on: a cluster row, or those columns."""

    enabled: bool
    connection_type: str
    agent_credential_hash: str | None
    agent_credential_previous_hash: str | None


def still_valid(row: CredentialState, hashed: str) -> bool:
    """Whether a connection made with the credential `hashed` may go on."""
    return (
        row.enabled
        and row.connection_type == "agent"
        and hashed in (row.agent_credential_hash, row.agent_credential_previous_hash)
    )

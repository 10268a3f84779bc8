"""A secret ConfigSync's data, sealed at rest: bound to its workspace and name, opened only for
the controller (which writes it to the edge) and for merge patches, re-sealed on key rotation."""

from __future__ import annotations

import base64
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.configsyncs.schemas import ConfigSyncSpec, ConfigTarget
from app.crypto import Sealed, SecretBox
from app.models.deployments import Rollout, RolloutRevision


def sealed_for(workspace_id: int, name: str) -> str:
    """What a secret ConfigSync's ciphertext is bound to (it does not decrypt elsewhere)."""
    return f"configsync:{workspace_id}:{name}"


def seal_content(
    secrets: SecretBox, workspace_id: int, name: str, spec: ConfigSyncSpec
) -> dict[str, Any]:
    plain = {"data": spec.data, "binaryData": spec.binaryData}
    if not spec.secret:
        return plain
    sealed = secrets.seal(json.dumps(plain).encode(), bound_to=sealed_for(workspace_id, name))
    return {
        "secret": True,
        "keys": sorted([*spec.data, *spec.binaryData]),
        "keyId": sealed.key_id,
        "ciphertext": base64.b64encode(sealed.ciphertext).decode(),
    }


def open_content(
    secrets: SecretBox, workspace_id: int, name: str, content: dict[str, Any]
) -> dict[str, Any]:
    """{data, binaryData} in the clear (for the dispatcher and for merge patches only)."""
    if not content.get("secret"):
        return {"data": content.get("data", {}), "binaryData": content.get("binaryData", {})}
    sealed = Sealed(content["keyId"], base64.b64decode(content["ciphertext"]))
    opened: dict[str, Any] = json.loads(
        secrets.open(sealed, bound_to=sealed_for(workspace_id, name))
    )
    return opened


async def rotate_configsyncs(session: AsyncSession, secrets: SecretBox) -> int:
    """Re-seal secret ConfigSyncs (and their revisions) under the current key; how many."""
    count = 0
    rollouts = (
        await session.scalars(
            select(Rollout)
            .where(Rollout.kind == "ConfigSync")
            .order_by(Rollout.id)
            .with_for_update(key_share=True)
        )
    ).all()
    for rollout in rollouts:
        revisions = (
            await session.scalars(
                select(RolloutRevision).where(RolloutRevision.rollout_id == rollout.id)
            )
        ).all()
        holders: list[Rollout | RolloutRevision] = [rollout, *revisions]
        for holder in holders:
            content = holder.content or {}
            if not content.get("secret") or content.get("keyId") == secrets.current_id:
                continue
            plain = open_content(secrets, rollout.workspace_id, rollout.name, content)
            spec = ConfigSyncSpec(secret=True, targets=[ConfigTarget(region="-")], **plain)
            holder.content = seal_content(secrets, rollout.workspace_id, rollout.name, spec)
            count += 1
    return count

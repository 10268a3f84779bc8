"""ConfigSyncs: configuration pushed to clusters as a ConfigMap (or a Secret), dispatched by the
rollout engine like a deployment. A secret's data is stored sealed and never returned."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.configsyncs.schemas import (
    ConfigSyncIn,
    ConfigSyncOut,
    ConfigSyncSpec,
    ConfigSyncStatus,
    ConfigTarget,
    ConfigTargetStatus,
)
from app.crypto import Sealed, SecretBox
from app.deployments.resolution import resolve_targets
from app.deployments.schemas import TargetSpec
from app.deployments.service import DeploymentService
from app.deployments.status import deployment_status
from app.errors import invalid_field
from app.kit.resource import editable_form, object_meta
from app.models.deployments import Rollout, RolloutRevision, RolloutTarget
from app.workspaces.namespaces import default_namespace


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


class ConfigSyncService(DeploymentService):
    in_model = ConfigSyncIn
    kind = "ConfigSync"

    def __init__(self, *args: Any, secrets: SecretBox, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.secrets = secrets

    def spec_of(self, row: Rollout) -> ConfigSyncSpec:
        """The spec in the clear (a secret's values decrypted): for comparisons and patches."""
        opened = open_content(self.secrets, self.workspace.id, row.name, row.content)
        return ConfigSyncSpec(
            namespace=row.namespace,
            secret=bool(row.content.get("secret")),
            targets=[ConfigTarget.model_validate(t) for t in row.targets],
            **opened,
        )

    def comparable_spec(self, row: Rollout) -> Any:
        return self.spec_of(row)

    async def apply_spec(self, row: Rollout, body: Any) -> None:
        """A secret's values are write-only: a body without them (as read back) keeps the
        stored ones, and a secret ConfigSync cannot turn into a plain one (that would publish
        its values)."""
        if row.revision and row.content.get("secret"):
            if not body.spec.secret:
                raise invalid_field(
                    "spec.secret", "a secret ConfigSync stays secret; delete and re-create it"
                )
            if not body.spec.data and not body.spec.binaryData:
                stored = self.spec_of(row)
                body.spec.data, body.spec.binaryData = stored.data, stored.binaryData
        await super().apply_spec(row, body)

    def content_of(self, spec: Any) -> dict[str, Any]:
        return spec.model_dump(mode="json")  # type: ignore[no-any-return]

    def describe(self, row: Rollout) -> str:
        keys = row.content.get("keys") or sorted(
            [*row.content.get("data", {}), *row.content.get("binaryData", {})]
        )
        return f"{len(keys)} keys"

    async def check_content(self, name: str, spec: Any) -> None:
        targets = [TargetSpec(region=t.region, clusters=t.clusters) for t in spec.targets]
        self._resolved = await resolve_targets(
            self.session,
            self.workspace,
            targets=targets,
            namespace=spec.namespace or default_namespace(self.workspace.name),
            claim=True,
        )

    def store_spec(self, row: Rollout, spec: Any) -> None:
        row.application_version = None
        row.content = seal_content(self.secrets, self.workspace.id, row.name, spec)
        row.targets = [t.model_dump(mode="json", exclude_none=True) for t in spec.targets]
        row.namespace = spec.namespace

    def render(self, row: Rollout) -> ConfigSyncOut:  # type: ignore[override]
        secret = bool(row.content.get("secret"))
        spec = ConfigSyncSpec(
            namespace=row.namespace,
            secret=secret,
            targets=[ConfigTarget.model_validate(t) for t in row.targets],
            # A secret's values are never returned: `status.dataKeys` lists its keys.
            data={} if secret else row.content.get("data", {}),
            binaryData={} if secret else row.content.get("binaryData", {}),
        )
        return ConfigSyncOut(
            metadata=object_meta(row, self.workspace.name),
            spec=spec,
            status=ConfigSyncStatus(
                observedGeneration=row.generation, revision=row.revision, dataKeys=self._keys(row)
            ),
        )

    def editable(self, row: Rollout) -> dict[str, Any]:
        form = editable_form(self.render(row))
        form["spec"] = self.spec_of(row).model_dump(mode="json")  # a patch keeps the values
        return form

    @staticmethod
    def _keys(row: Rollout) -> list[str]:
        content = row.content
        return list(
            content.get("keys")
            or sorted([*content.get("data", {}), *content.get("binaryData", {})])
        )

    async def statuses(
        self, rows: Sequence[Rollout], targets: dict[int, list[tuple[RolloutTarget, str]]]
    ) -> dict[str, BaseModel]:
        result: dict[str, BaseModel] = {}
        for row in rows:
            s = deployment_status(row, targets[row.id])
            result[row.name] = ConfigSyncStatus(
                phase=s.phase,
                observedGeneration=s.observedGeneration,
                revision=s.revision,
                summary=s.summary,
                conditions=s.conditions,
                dataKeys=self._keys(row),
                targets=[
                    ConfigTargetStatus(
                        cluster=t.cluster, region=t.region, phase=t.phase,
                        appliedRevision=t.revision, message=t.message,
                        lastTransitionTime=t.lastTransitionTime, lastSyncTime=t.lastSyncTime,
                    )
                    for t in s.targets
                ],
            )  # fmt: skip
        return result

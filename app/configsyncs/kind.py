"""ConfigSyncs: configuration pushed to clusters as a ConfigMap (or a Secret), rolled out like a
deployment (app/deployments/service.py); these are the rules in which it differs. A secret's
data is stored sealed (`sealing.py`) and never returned."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from app.configsyncs.schemas import (
    ConfigSyncIn,
    ConfigSyncOut,
    ConfigSyncSpec,
    ConfigSyncStatus,
    ConfigTarget,
    ConfigTargetStatus,
)
from app.configsyncs.sealing import open_content, seal_content
from app.crypto import SecretBox
from app.deployments.kinds import KindRules, RolloutScope, TargetsByRollout
from app.deployments.resolution import Resolved, resolve_targets
from app.deployments.schemas import TargetSpec
from app.deployments.status import deployment_status
from app.errors import invalid_field
from app.kit.resource import editable_form, object_meta
from app.models.deployments import Rollout


class ConfigSyncRules(KindRules[ConfigSyncSpec, ConfigSyncOut]):
    kind = "ConfigSync"
    in_model = ConfigSyncIn

    def __init__(self, scope: RolloutScope, *, secrets: SecretBox) -> None:
        super().__init__(scope)
        self.secrets = secrets

    def spec_of(self, row: Rollout) -> ConfigSyncSpec:
        """The spec in the clear (a secret's values decrypted): for comparisons and patches."""
        opened = open_content(self.secrets, self.scope.workspace.id, row.name, row.content)
        return ConfigSyncSpec(
            namespace=row.namespace,
            secret=bool(row.content.get("secret")),
            targets=[ConfigTarget.model_validate(t) for t in row.targets],
            **opened,
        )

    def comparable_spec(self, row: Rollout) -> Any:
        return self.spec_of(row)  # a secret's values too: changing only them is a change

    def prepare_update(self, row: Rollout, spec: ConfigSyncSpec) -> None:
        """A secret's values are write-only: a body without them (as read back) keeps the
        stored ones, and a secret ConfigSync cannot turn into a plain one (that would publish
        its values)."""
        if not row.content.get("secret"):
            return
        if not spec.secret:
            raise invalid_field(
                "spec.secret", "a secret ConfigSync stays secret; delete and re-create it"
            )
        if not spec.data and not spec.binaryData:
            stored = self.spec_of(row)
            spec.data, spec.binaryData = stored.data, stored.binaryData

    def describe(self, row: Rollout) -> str:
        return f"{len(_keys(row))} keys"

    async def check_content(
        self, name: str, spec: ConfigSyncSpec, before: dict[str, Any] | None
    ) -> list[Resolved]:
        targets = [TargetSpec(region=t.region, clusters=t.clusters) for t in spec.targets]
        return await resolve_targets(
            self.scope.session, self.scope.workspace, targets=targets,
            namespace=self.scope.namespace(spec.namespace), claim=True,
        )  # fmt: skip

    def store_spec(self, row: Rollout, spec: ConfigSyncSpec) -> None:
        row.application_version = None
        row.content = seal_content(self.secrets, self.scope.workspace.id, row.name, spec)
        row.targets = [t.model_dump(mode="json", exclude_none=True) for t in spec.targets]
        row.namespace = spec.namespace

    def render(self, row: Rollout) -> ConfigSyncOut:
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
            metadata=object_meta(row, self.scope.workspace.name),
            spec=spec,
            status=ConfigSyncStatus(
                observedGeneration=row.generation, revision=row.revision, dataKeys=_keys(row)
            ),
        )

    def editable(self, row: Rollout) -> dict[str, Any]:
        form = editable_form(self.render(row))
        form["spec"] = self.spec_of(row).model_dump(mode="json")  # a patch keeps the values
        return form

    async def statuses(
        self, rows: Sequence[Rollout], targets: TargetsByRollout
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
                dataKeys=_keys(row),
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


def _keys(row: Rollout) -> list[str]:
    """The names of a ConfigSync's keys (a secret's are stored beside its ciphertext)."""
    content = row.content
    return list(
        content.get("keys") or sorted([*content.get("data", {}), *content.get("binaryData", {})])
    )

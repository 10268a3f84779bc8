from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.kit.resource import ResourceIn, ResourceList, ResourceOut, object_meta
from app.models.serviceaccounts import ServiceAccount

ServiceAccountRole = Literal["platform-admin", "platform-regular", "admin", "operator", "viewer"]


class ServiceAccountSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    displayName: str | None = Field(None, max_length=253)
    role: ServiceAccountRole = Field(
        description="platform-admin | platform-regular for platform accounts; "
        "admin | operator | viewer for workspace accounts."
    )
    disabled: bool = False


class ServiceAccountStatus(BaseModel):
    clientId: str
    clientSecret: str | None = Field(
        None, description="Only in the response that creates the account: store it now."
    )


class ServiceAccountIn(ResourceIn[ServiceAccountSpec]):
    apiVersion: Literal["edge.theriseunion.io/v1alpha1"] = "edge.theriseunion.io/v1alpha1"
    kind: Literal["ServiceAccount"] = "ServiceAccount"


class ServiceAccountOut(ResourceOut[ServiceAccountSpec, ServiceAccountStatus]):
    kind: Literal["ServiceAccount"] = "ServiceAccount"


class ServiceAccountList(ResourceList[ServiceAccountOut]):
    kind: Literal["ServiceAccountList"] = "ServiceAccountList"


def service_account_out(row: ServiceAccount, workspace: str | None) -> ServiceAccountOut:
    return ServiceAccountOut(
        metadata=object_meta(row, workspace),
        spec=ServiceAccountSpec(
            displayName=row.display_name,
            role=row.role,
            disabled=row.disabled,
        ),
        status=ServiceAccountStatus(clientId=row.client_id),
    )

"""The API envelope (apiVersion/kind/metadata/spec/status), validation and rendering.

Server-owned fields (uid, resourceVersion, generation, timestamps, status, workspace) are
accepted in a body, so a GET result can be edited and sent back, and are then ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar

import pydantic_core
import yaml
from fastapi import Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.db.base import ResourceMixin
from app.errors import Unprocessable, field_path
from app.kit.selectors import label_key_problem, label_value_problem

API_GROUP = "edge.theriseunion.io"
API_VERSION = f"{API_GROUP}/v1alpha1"

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_ANNOTATIONS_BYTES = 256 * 1024

YAML_MEDIA_TYPE = "application/yaml"


DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def dotted_name_problem(name: str) -> str | None:
    """For kinds whose names carry a version (`monitoring-stack-v2.0.0`): dots allowed."""
    if len(name) > 63:
        return f"name {name!r} is longer than 63 characters"
    if not DNS1123_SUBDOMAIN.match(name) or ".." in name:
        return (
            f"name {name!r} must be lower-case alphanumerics, '-' and '.', "
            "starting and ending alphanumeric"
        )
    return None


def name_problem(name: str) -> str | None:
    if len(name) > 63:
        return f"name {name!r} is longer than 63 characters"
    if not DNS1123_LABEL.match(name):
        return (
            f"name {name!r} must be a DNS-1123 label: lower-case alphanumerics and '-', "
            "starting and ending alphanumeric"
        )
    return None


class ObjectMetaIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    NAME_RULE: ClassVar[Callable[[str], str | None]] = staticmethod(name_problem)

    name: str | None = Field(None, description="DNS-1123 label, at most 63 characters.")
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    resourceVersion: str | None = Field(
        None, description="Echo the value you read; a stale one makes the write fail with 409."
    )
    # Server-owned: accepted so objects can round-trip, then ignored.
    uid: Any = None
    generation: Any = None
    creationTimestamp: Any = None
    deletionTimestamp: Any = None
    workspace: Any = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and (problem := cls.NAME_RULE(value)):
            raise ValueError(problem)
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key, label in (value or {}).items():
            if problem := label_key_problem(key) or label_value_problem(label):
                raise ValueError(problem)
        return value

    @field_validator("annotations")
    @classmethod
    def _annotations(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        total = 0
        for key, note in (value or {}).items():
            if problem := label_key_problem(key):
                raise ValueError(problem.replace("label key", "annotation key"))
            total += len(key) + len(note.encode())
        if total > MAX_ANNOTATIONS_BYTES:
            raise ValueError(f"annotations total {total} bytes; the limit is 256 KiB")
        return value


class DottedObjectMetaIn(ObjectMetaIn):
    NAME_RULE: ClassVar[Callable[[str], str | None]] = staticmethod(dotted_name_problem)


SpecT = TypeVar("SpecT", bound=BaseModel)
StatusT = TypeVar("StatusT", bound=BaseModel)


class ResourceIn(BaseModel, Generic[SpecT]):
    """A write body. Subclasses pin `kind` (and `apiVersion`) with a Literal and give `spec`."""

    model_config = ConfigDict(extra="forbid")

    metadata: ObjectMetaIn
    spec: SpecT
    status: Any = Field(None, description="Server-owned; ignored on writes.")


class ObjectMeta(BaseModel):
    name: str
    workspace: str | None = None
    uid: str
    labels: dict[str, str]
    annotations: dict[str, str]
    resourceVersion: str
    generation: int
    creationTimestamp: datetime
    deletionTimestamp: datetime | None = None


class ResourceOut(BaseModel, Generic[SpecT, StatusT]):
    apiVersion: str = API_VERSION
    kind: str
    metadata: ObjectMeta
    spec: SpecT
    status: StatusT


class ListMeta(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    continue_: str | None = Field(
        None, alias="continue", description="Pass as ?continue= to get the next page."
    )
    remainingItemCount: int | None = None


ItemT = TypeVar("ItemT", bound=BaseModel)


class ResourceList(BaseModel, Generic[ItemT]):
    apiVersion: str = API_VERSION
    kind: str = "List"
    metadata: ListMeta
    items: list[ItemT]


class Documents(list[dict[str, Any]]):
    """Items a service built straight as JSON-ready documents, in exactly the shape of its kind's
    output model: a list sends them as they are, without a model (and its validation) per item."""


class JSONDocument(dict[str, Any]):
    """A response body of plain JSON values (no models, no NaN) built for speed: `render`
    encodes it with pydantic-core in one pass, several times faster than the standard library
    on large bodies, with the same JSON."""


def editable_form(out: ResourceOut[Any, Any]) -> dict[str, Any]:
    """The writable part of an object, as a body: what a merge patch is applied to."""
    return {
        "apiVersion": out.apiVersion,
        "kind": out.kind,
        "metadata": {
            "name": out.metadata.name,
            "labels": out.metadata.labels,
            "annotations": out.metadata.annotations,
        },
        "spec": out.spec.model_dump(mode="json", exclude_none=True),
    }


def json_time(value: datetime | None) -> str | None:
    """A timestamp as pydantic writes it in JSON (UTC as `Z`)."""
    if value is None:
        return None
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def object_meta_document(row: ResourceMixin, workspace: str | None = None) -> dict[str, Any]:
    """ObjectMeta in JSON form, built straight from the row (see `Documents`)."""
    return {
        "name": row.name,
        "workspace": workspace,
        "uid": str(row.uid),
        "labels": row.labels or {},
        "annotations": row.annotations or {},
        "resourceVersion": str(row.resource_version),
        "generation": row.generation,
        "creationTimestamp": json_time(row.created_at),
        "deletionTimestamp": json_time(row.deletion_timestamp),
    }


def object_meta(row: ResourceMixin, workspace: str | None = None) -> ObjectMeta:
    return ObjectMeta.model_validate(object_meta_document(row, workspace))


ModelT = TypeVar("ModelT", bound=BaseModel)


def validate_as(model: type[ModelT], data: dict[str, Any]) -> ModelT:
    """Validate a decoded body; 422 listing every field at fault."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = []
        for err in exc.errors(include_url=False):
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown field"
            errors.append({"field": field_path(err["loc"]), "message": message})
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise Unprocessable(detail, errors=errors) from None


def wants_yaml(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return any(
        part.split(";")[0].strip() in ("application/yaml", "application/x-yaml", "text/yaml")
        for part in accept.split(",")
    )


def render(
    request: Request,
    body: BaseModel | dict[str, Any],
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """JSON by default, YAML when the client asks for it with Accept. Models and JSONDocuments
    are encoded by pydantic-core in one pass (a model without an intermediate dict), a list of
    a hundred clusters in about half the time of the standard library, with the same JSON."""
    if wants_yaml(request):
        data = body.model_dump(mode="json", by_alias=True) if isinstance(body, BaseModel) else body
        plain = dict(data) if isinstance(data, JSONDocument) else data  # safe_dump: exact types
        text = yaml.safe_dump(plain, sort_keys=False, allow_unicode=True)
        return Response(text, status_code, headers=headers, media_type=YAML_MEDIA_TYPE)
    encoded: str | bytes
    if isinstance(body, BaseModel):
        encoded = body.model_dump_json(by_alias=True)
    elif isinstance(body, JSONDocument):
        encoded = pydantic_core.to_json(body)
    else:
        return JSONResponse(body, status_code, headers=headers)
    return Response(encoded, status_code, headers=headers, media_type="application/json")

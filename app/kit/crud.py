"""The six routes of a resource kind (list, create, read, replace, patch, delete), written once.

A domain router calls `add_resource_routes` with its models, a dependency that builds its
service, and the permission dependencies for reads and writes; it adds any extra routes itself.
"""

# No `from __future__ import annotations` here: the routes below are closures whose
# annotations name local variables, which FastAPI can only see when evaluated eagerly.

from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.params import Depends as DependsParam

from app.db.session import SessionDep
from app.kit import responses
from app.kit.body import MERGE_PATCH_TYPES, read_object
from app.kit.idempotency import create_once
from app.kit.openapi import merge_patch_body, request_body
from app.kit.paging import page_request
from app.kit.resource import ResourceIn, ResourceList, ResourceOut, validate_as
from app.kit.service import ResourceService

IfMatch = Annotated[str | None, Header(alias="If-Match")]
PropagationPolicy = Annotated[
    Literal["Orphan", "Background", "Foreground"] | None,
    Query(
        alias="propagationPolicy",
        description="Orphan leaves what the object made at the edge; the default removes it.",
    ),
]


def idempotency_owner(request: Request) -> str:
    """Who an Idempotency-Key belongs to: kind and id, since a user and a service account may
    share a name."""
    principal = getattr(request.state, "principal", None)
    if principal is None:
        return "anonymous"
    return f"{principal.kind}:{principal.id}"


def add_resource_routes(
    router: APIRouter,
    *,
    kind: str,
    plural: str,
    in_model: type[ResourceIn[Any]],
    out_model: type[ResourceOut[Any, Any]],
    list_model: type[ResourceList[Any]],
    service: Callable[
        ..., ResourceService[Any, Any, Any, Any] | Awaitable[ResourceService[Any, Any, Any, Any]]
    ],
    read_access: Sequence[DependsParam],
    write_access: Sequence[DependsParam],
    filters: Sequence[str] = (),
    with_delete: bool = True,
) -> None:
    """Long on purpose: the standard routes of a kind (list, create, read, replace, patch,
    delete), each a short nested handler over this function's arguments.

    `filters`: query parameters that filter lists by equality on the column of that name;
    `with_delete=False` for kinds whose router defines a DELETE of its own."""
    Service = Annotated[ResourceService[Any, Any, Any, Any], Depends(service)]
    reads, writes = list(read_access), list(write_access)

    @router.get("", operation_id=f"list{plural}", response_model=list_model, dependencies=reads)
    async def list_objects(
        request: Request,
        service: Service,
        limit: Annotated[int, Query(ge=1, description=responses.LIMIT_HELP)] = 100,
        continue_: Annotated[str | None, Query(alias="continue")] = None,
        label_selector: Annotated[str | None, Query(alias="labelSelector")] = None,
    ) -> Response:
        chosen = {f: request.query_params[f] for f in filters if f in request.query_params}
        page = page_request(limit, continue_, label_selector, **chosen)
        items, result = await service.list(page, chosen)
        return responses.render_list(request, list_model, items, result)

    @router.post(
        "",
        operation_id=f"create{kind}",
        status_code=201,
        response_model=out_model,
        openapi_extra=request_body(in_model),
        responses=responses.WRITE_ERRORS,
        dependencies=writes,
    )
    async def create_object(request: Request, session: SessionDep, service: Service) -> Response:
        body = await read_object(request)

        async def create() -> responses.Created:
            return responses.created(request, await service.create(validate_as(in_model, body)))

        return await create_once(
            request, session, body, create, principal=idempotency_owner(request)
        )

    @router.get("/{name}", operation_id=f"read{kind}", response_model=out_model, dependencies=reads)
    async def read_object_route(request: Request, name: str, service: Service) -> Response:
        return responses.render_read(request, await service.read(name))

    @router.put(
        "/{name}",
        operation_id=f"replace{kind}",
        response_model=out_model,
        openapi_extra=request_body(in_model),
        responses=responses.WRITE_ERRORS,
        dependencies=writes,
    )
    async def replace_object(
        request: Request, name: str, service: Service, if_match: IfMatch = None
    ) -> Response:
        body = validate_as(in_model, await read_object(request))
        return responses.render_object(request, await service.replace(name, body, if_match))

    @router.patch(
        "/{name}",
        operation_id=f"patch{kind}",
        response_model=out_model,
        openapi_extra=merge_patch_body(in_model),
        responses=responses.WRITE_ERRORS,
        dependencies=writes,
    )
    async def patch_object(
        request: Request, name: str, service: Service, if_match: IfMatch = None
    ) -> Response:
        patch = await read_object(request, accepted=MERGE_PATCH_TYPES)
        return responses.render_object(request, await service.patch(name, patch, if_match))

    if not with_delete:
        return

    @router.delete(
        "/{name}",
        operation_id=f"delete{kind}",
        response_model=out_model,
        responses=responses.WRITE_ERRORS,
        dependencies=writes,
    )
    async def delete_object(
        request: Request,
        name: str,
        service: Service,
        if_match: IfMatch = None,
        propagation_policy: PropagationPolicy = None,
    ) -> Response:
        orphan = propagation_policy == "Orphan"
        return responses.render_object(request, await service.delete(name, if_match, orphan=orphan))

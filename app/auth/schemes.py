"""The security schemes the OpenAPI document names, and which operations take which: `/docs`
offers "Authorize" with them, and generated clients configure authentication from them.

They are written into the document once, not declared as FastAPI security dependencies:
FastAPI would call those on every request, and each dependency costs it bookkeeping (three
per authenticated request were ~6 % of a GET's CPU). An authentication dependency says what it
accepts with `@accepts(...)`; an operation is given the schemes of the first such dependency it
takes, or states its own in `openapi_extra`."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from fastapi.dependencies.models import Dependant
from fastapi.encoders import jsonable_encoder
from fastapi.openapi.models import HTTPBase, HTTPBearer, OAuth2, OAuthFlowPassword, OAuthFlows
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import BaseRoute

SCHEMES = {
    "oauth2": OAuth2(
        flows=OAuthFlows(
            password=OAuthFlowPassword(tokenUrl="/oauth/token", refreshUrl="/oauth/token")
        ),
        description="A user's name and password exchanged for a token (client `edge-console`).",
    ),
    "bearer": HTTPBearer(bearerFormat="JWT", description="An access token of `POST /oauth/token`."),
    "basic": HTTPBase(
        scheme="basic", description="A service account's client id and secret (Helm)."
    ),
    "agentCredential": HTTPBearer(
        description="An edge agent's credential, of `POST /api/v1/agent/join`."
    ),
}

Requirements = list[dict[str, list[str]]]  # alternatives: any one of them will do
BEARER: Requirements = [{"oauth2": []}, {"bearer": []}]  # a password grant's token, or any
BEARER_OR_BASIC: Requirements = [*BEARER, {"basic": []}]
AGENT: Requirements = [{"agentCredential": []}]

F = TypeVar("F", bound=Callable[..., Any])
_ACCEPTED: dict[Callable[..., Any], Requirements] = {}


def accepts(requirements: Requirements) -> Callable[[F], F]:
    """Mark an authentication dependency with the schemes it accepts."""

    def mark(dependency: F) -> F:
        _ACCEPTED[dependency] = requirements
        return dependency

    return mark


def declare_security(openapi: dict[str, Any], routes: Sequence[BaseRoute]) -> None:
    """Each operation's `security` from its authentication dependency (an operation that
    states its own keeps it), and the schemes in `components`."""
    for context in iter_route_contexts(routes):
        route = context.original_route
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        requirements = next(
            (_ACCEPTED[call] for call in _calls(route.dependant) if call in _ACCEPTED), None
        )
        if requirements is None:
            continue
        operations = openapi.get("paths", {}).get(context.path_format, {})
        for method in route.methods or ():
            operation = operations.get(method.lower())
            if operation is not None:
                operation.setdefault("security", list(requirements))
    components = openapi.setdefault("components", {})
    components["securitySchemes"] = {
        name: jsonable_encoder(model, by_alias=True, exclude_none=True)
        for name, model in SCHEMES.items()
    }


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)

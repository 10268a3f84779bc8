"""Every route runs on the event loop from end to end.

FastAPI runs a plain `def` dependency or endpoint in a worker thread: a thread hand-off per
request, and the GIL passed back and forth under load. On the GET of a deployment that one
sync dependency (the service factory) cost 7 % of the request's CPU, measured in process.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from app.config import Settings
from app.console.app import create_console_app
from app.main import create_app


def _routes(routes: list[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):  # an included router, resolved lazily
            yield from _routes(route.original_router.routes)
        elif hasattr(route, "routes"):
            yield from _routes(route.routes)


def _runs_on_the_loop(call: Callable[..., Any]) -> bool:
    # A class instance used as a dependency runs on the loop when its __call__ is async.
    method = type(call).__call__ if not inspect.isfunction(call) else call
    return any(
        inspect.iscoroutinefunction(c) or inspect.isasyncgenfunction(c) for c in (call, method)
    )


def _threaded(dependant: Dependant) -> Iterator[str]:
    for sub in dependant.dependencies:
        if sub.call is not None and not _runs_on_the_loop(sub.call):
            yield getattr(sub.call, "__qualname__", repr(sub.call))
        yield from _threaded(sub)


def _sync_parts(app: FastAPI) -> set[str]:
    found = set()
    for route in _routes(app.routes):
        for name in _threaded(route.dependant):
            found.add(f"{route.path}: dependency {name}")
        if not _runs_on_the_loop(route.endpoint):
            found.add(f"{route.path}: endpoint {route.endpoint.__qualname__}")
    return found


def test_no_route_hands_its_request_to_a_thread(settings: Settings) -> None:
    api = create_app(settings)
    assert len(list(_routes(api.routes))) > 100  # the walk reached the routers
    assert _sync_parts(api) == set()
    assert _sync_parts(create_console_app(settings, secret="s" * 32)) == set()

"""The AppError hierarchy and the one handler that renders every error as problem+json (RFC 9457).

Typed errors carry their status code; routers and services raise them, nothing else formats
error bodies.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.crypto import DecryptionError

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_BASE = "https://edge.theriseunion.io/problems/"

# How long clients should wait before retrying when a dependency is down.
RETRY_AFTER_SECONDS = 5


class AppError(Exception):
    status: int = 500
    code: str = "InternalError"
    title: str = "Internal server error"

    def __init__(
        self,
        detail: str,
        *,
        errors: Sequence[dict[str, str]] = (),
        headers: dict[str, str] | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = list(errors)
        self.headers = headers or {}
        if code is not None:
            self.code = code


class BadRequest(AppError):
    status, code, title = 400, "BadRequest", "Malformed request"


class Unauthorized(AppError):
    status, code, title = 401, "Unauthorized", "Authentication required"


class Forbidden(AppError):
    status, code, title = 403, "Forbidden", "Not allowed"


class NotFound(AppError):
    status, code, title = 404, "NotFound", "Not found"


class Conflict(AppError):
    status, code, title = 409, "Conflict", "Conflict"


class PreconditionFailed(AppError):
    status, code, title = 412, "PreconditionFailed", "Precondition failed"


class PayloadTooLarge(AppError):
    status, code, title = 413, "PayloadTooLarge", "Request body too large"


class UnsupportedMediaType(AppError):
    status, code, title = 415, "UnsupportedMediaType", "Unsupported media type"


class Unprocessable(AppError):
    status, code, title = 422, "Invalid", "Invalid request"


def invalid_field(field: str, message: str, *, code: str | None = None) -> Unprocessable:
    """A 422 about one field, naming it in `detail` and in `errors`."""
    return Unprocessable(
        f"{field}: {message}", errors=[{"field": field, "message": message}], code=code
    )


class ServiceUnavailable(AppError):
    status, code, title = 503, "ServiceUnavailable", "Service unavailable"

    def __init__(self, detail: str, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.headers.setdefault("Retry-After", str(RETRY_AFTER_SECONDS))


def field_path(loc: Sequence[int | str]) -> str:
    """Render a pydantic location as a JSON-path-like field name: `spec.targets[0].replicas`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def problem_response(
    request: Request,
    *,
    status: int,
    title: str,
    detail: str,
    code: str,
    errors: Sequence[dict[str, str]] = (),
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "instance": request.url.path,
    }
    if errors:
        body["errors"] = list(errors)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def is_database_unavailable(exc: BaseException) -> bool:
    """True for errors that mean "PostgreSQL cannot be reached right now", not bad input."""
    if isinstance(exc, sa_exc.TimeoutError):  # pool exhausted
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        orig = getattr(exc.orig, "__cause__", None) or exc.orig
        return _is_connection_failure(orig) or _is_connection_failure(exc.orig)
    return _is_connection_failure(exc)


def _is_connection_failure(exc: BaseException | None) -> bool:
    if exc is None:
        return False
    if isinstance(exc, OSError | asyncio.TimeoutError | TimeoutError | ConnectionError):
        return True
    # asyncpg's classes, matched by name so this module needs no asyncpg import.
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(
        names
        & {
            "PostgresConnectionError",
            "ConnectionDoesNotExistError",
            "CannotConnectNowError",
            "ConnectionFailureError",
            "QueryCanceledError",  # statement_timeout: overloaded, not the caller's fault
            "AdminShutdownError",
            "CrashShutdownError",
            "TooManyConnectionsError",
        }
    )


# SQLSTATEs with which PostgreSQL aborts a transaction that can simply run again: a
# serialization failure and a deadlock victim. Nothing of it was written.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})


def is_retryable_transaction_error(exc: BaseException) -> bool:
    """True when the database rolled the transaction back to resolve a conflict with another."""
    return isinstance(exc, sa_exc.DBAPIError) and (
        getattr(exc.orig, "sqlstate", None) in RETRYABLE_SQLSTATES
    )


ErrorObserver = Callable[[Request, int, str], Awaitable[None]]


def install_error_handlers(app: FastAPI, observers: Sequence[ErrorObserver] = ()) -> None:
    """Render errors; `observers` hear about every 4xx answered (e.g. to audit refusals).

    Long on purpose: one short handler per kind of error, nested so that each closes over
    `observers`; read them one by one."""

    async def app_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AppError)
        for observer in observers:
            try:
                await observer(request, exc.status, exc.detail)
            except Exception:
                logger.warning("error observer failed", exc_info=True)
        return problem_response(
            request,
            status=exc.status,
            title=exc.title,
            detail=exc.detail,
            code=exc.code,
            errors=exc.errors,
            headers=exc.headers,
        )

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [{"field": field_path(err["loc"]), "message": err["msg"]} for err in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
        return problem_response(
            request,
            status=422,
            title="Invalid request",
            detail=detail,
            code="Invalid",
            errors=errors,
        )

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names only the methods of the first route matching the path; every
            # route of the path counts (RFC 9110 §15.5.6).
            headers["Allow"] = ", ".join(allowed_methods(request))
        return problem_response(
            request,
            status=exc.status_code,
            title=detail,
            detail=f"{request.method} {request.url.path}: {detail}",
            code=code,
            headers=headers,
        )

    def retry_later(request: Request, detail: str, code: str) -> JSONResponse:
        return problem_response(
            request,
            status=503,
            title="Service unavailable",
            detail=detail,
            code=code,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, DecryptionError):
            # An operator matter (a key dropped before `rotate-key` ran), not the client's.
            logger.error("a stored secret cannot be decrypted: %s", exc)
            return retry_later(
                request,
                "a stored secret cannot be decrypted with the configured keys "
                "(ENCRYPTION_KEY, ENCRYPTION_KEYS_PREVIOUS)",
                "SecretUndecryptable",
            )
        if isinstance(exc, sa_exc.TimeoutError):  # every pooled connection is in use
            logger.warning("database busy: no pooled connection came free in time")
            return retry_later(
                request,
                "no database connection came free in time (the database is busy or slow to "
                "answer); retry later",
                "DatabaseBusy",
            )
        if is_database_unavailable(exc):
            logger.warning("database unavailable: %s", type(exc).__name__)
            return retry_later(
                request, "the database is unavailable; retry later", "DatabaseUnavailable"
            )
        if is_retryable_transaction_error(exc):
            # Logged with its traceback: a deadlock is a lock-order bug worth fixing, even
            # though the client only needs to retry.
            logger.warning(
                "transaction aborted by the database on %s %s", request.method,
                request.url.path, exc_info=True,
            )  # fmt: skip
            return retry_later(
                request,
                "the database aborted this request's transaction in a conflict with another; "
                "nothing was written, retry",
                "TransactionConflict",
            )
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            request,
            status=500,
            title="Internal server error",
            detail="an unexpected error occurred; it has been logged",
            code="InternalError",
        )

    app.add_exception_handler(AppError, app_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    # Database, network and key errors are registered by class so that they are answered by
    # the exception middleware (503 or a logged 500) rather than re-raised by the server layer.
    for cls in (sa_exc.SQLAlchemyError, OSError, TimeoutError, DecryptionError, Exception):
        app.add_exception_handler(cls, unexpected_error)


def allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)

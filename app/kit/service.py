"""The write and read flow every resource kind shares; a domain service fills in the hooks.

Services never commit: the request session commits at the edge. Cache updates are queued to run
after that commit, so the cache never holds something PostgreSQL does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Generic, Protocol

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession
from typing_extensions import TypeVar

from app.cache import ObjectCache
from app.db.base import ResourceMixin
from app.db.session import after_commit
from app.errors import NotFound, invalid_field
from app.kit.body import merge_patch
from app.kit.etag import check_write_preconditions
from app.kit.paging import Page, PageRequest
from app.kit.repository import ResourceRepository
from app.kit.resource import (
    Documents,
    EncodedDocument,
    ResourceIn,
    ResourceOut,
    editable_form,
    validate_as,
)
from app.redis import key as redis_key

RowT = TypeVar("RowT", bound=ResourceMixin)
InT = TypeVar("InT", bound=ResourceIn[Any])
OutT = TypeVar("OutT", bound=ResourceOut[Any, Any])
# What `apply_spec` found that the steps after the write need (a rollout's resolved targets and
# its previous revision's content); most kinds need nothing.
ChangeT = TypeVar("ChangeT", default=None)


class ChangeRecorder(Protocol):
    """Records a change in the transaction that makes it: the request's audit trail
    (app.audit.service.AuditTrail). A protocol, so the kit stays below the audit layer."""

    def record(
        self, session: AsyncSession, *, action: str, outcome: int, kind: str, name: str
    ) -> None: ...


class ResourceService(Generic[RowT, InT, OutT, ChangeT]):
    in_model: type[BaseModel]  # the write body (a class attribute, or set per instance)
    cache_namespace: ClassVar[str | None] = None

    def __init__(
        self,
        session: AsyncSession,
        repository: ResourceRepository[RowT],
        cache: ObjectCache | None = None,
        audit: ChangeRecorder | None = None,
    ) -> None:
        self.session = session
        self.repository = repository
        self.cache = cache if self.cache_namespace else None
        self.audit = audit

    def record_audit(self, action: str, name: str, outcome: int = 200) -> None:
        """Record the change in the transaction that makes it (no change without its record)."""
        if self.audit is not None:
            self.audit.record(
                self.session, action=action, outcome=outcome, kind=self.repository.kind, name=name
            )

    # Hooks -----------------------------------------------------------------------------------

    def new_row(self, name: str) -> RowT:
        raise NotImplementedError

    async def apply_spec(self, row: RowT, body: InT) -> ChangeT:
        """Copy the body's spec onto the row (after domain validation); what it returns is
        handed to `after_create` or `after_update`."""
        raise NotImplementedError

    async def after_create(self, row: RowT, body: InT, change: ChangeT) -> None:
        """Work that needs the new row's id (e.g. the manager's membership)."""

    def render(self, row: RowT) -> OutT:
        raise NotImplementedError

    async def after_update(
        self, row: RowT, body: InT, change: ChangeT, *, spec_changed: bool
    ) -> None:
        """Work that follows an accepted update, in its transaction (e.g. a new revision)."""

    async def check_spec(self, body: InT) -> None:
        """Domain validation that needs the database (references to other objects)."""

    async def check_delete(self, row: RowT) -> None:
        """Refuse a delete that would break references (409)."""

    async def live_status(
        self, names: list[str], rows: Sequence[RowT] | None = None
    ) -> dict[str, BaseModel] | None:
        """Status computed at read time (e.g. counts of related objects), for each of `names`;
        None when the kind has none. Never cached: it changes without the object changing.
        `rows` are the objects themselves when the caller has just read them."""
        return None

    # Flow ------------------------------------------------------------------------------------

    def not_found(self, name: str) -> NotFound:
        return NotFound(f"{self.repository.kind} {name!r} not found")

    def _cache_key(self, name: str) -> str:
        return redis_key(f"{self.cache_namespace}/{name}", tag=f"{self.cache_namespace}/{name}")

    def _cache_after_commit(self, out: OutT, *, deleted_at: int | None = None) -> None:
        cache = self.cache
        if cache is None:
            return
        cache_key = self._cache_key(out.metadata.name)
        if deleted_at is not None:
            version = deleted_at

            async def forget() -> None:
                await cache.forget(cache_key, version)

            after_commit(self.session, forget)
            return
        data = out.model_dump(mode="json", by_alias=True)
        version = int(out.metadata.resourceVersion)

        async def put() -> None:
            await cache.put(cache_key, version, data)

        after_commit(self.session, put)

    async def create(self, body: InT) -> OutT:
        name = body.metadata.name
        if name is None:
            raise invalid_field("metadata.name", "required")
        await self.check_spec(body)
        row = self.new_row(name)
        row.labels = body.metadata.labels or {}
        row.annotations = body.metadata.annotations or {}
        change = await self.apply_spec(row, body)
        row = await self.repository.add(row)
        await self.after_create(row, body, change)
        out = self.render(row)
        self._cache_after_commit(out)
        self.record_audit("create", name, 201)
        return out

    def document(self, row: RowT) -> dict[str, Any]:
        """The object in JSON form; a kind may build it without a model (see `Documents`)."""
        return self.render(row).model_dump(mode="json", by_alias=True)

    async def read(self, name: str) -> dict[str, Any] | EncodedDocument:
        async def load() -> tuple[int, dict[str, Any]] | None:
            row = await self.repository.get(name)
            if row is None:
                return None
            return row.resource_version, self.document(row)

        if self.cache is not None:
            found = await self.cache.get_or_load(self._cache_key(name), load)
        else:
            loaded = await load()
            found = loaded[1] if loaded else None
        if found is None:
            raise self.not_found(name)
        live = await self.live_status([name])
        if live is not None:
            if name not in live:  # deleted since it was loaded
                raise self.not_found(name)
            found = {**found, "status": live[name].model_dump(mode="json")}
        return found

    async def list(
        self, page: PageRequest, filters: dict[str, str] | None = None
    ) -> tuple[list[OutT] | Documents, Page[Any]]:
        """One page; `filters` are equality filters on columns of the same name. A kind may
        return its items as ready-made `Documents` instead of models."""
        result = await self._page(page, filters)
        items = [self.render(row) for row in result.items]
        live = await self.live_status([item.metadata.name for item in items], result.items)
        if live is not None:
            for item in items:
                item.status = live.get(item.metadata.name, item.status)
        return items, result

    async def _page(self, page: PageRequest, filters: dict[str, str] | None) -> Page[RowT]:
        query = self.repository.select()
        for column, value in (filters or {}).items():
            query = query.where(getattr(self.repository.model, column) == value)
        return await self.repository.page(page, query)

    def comparable_spec(self, row: RowT) -> Any:
        """The spec as compared to tell whether an update changed it (bumps `generation`);
        kinds that hide write-only values in reads compare them too."""
        return self.render(row).spec

    def editable(self, row: RowT) -> dict[str, Any]:
        """The object as a write body, for merge patches (kinds with write-only fields adapt it)."""
        return editable_form(self.render(row))

    async def locked(self, name: str) -> RowT:
        row = await self.repository.get(name, for_update=True)
        if row is None:
            raise self.not_found(name)
        return row

    async def replace(self, name: str, body: InT, if_match: str | None) -> OutT:
        if body.metadata.name not in (None, name):
            raise invalid_field(
                "metadata.name",
                f"{body.metadata.name!r} does not match {name!r} in the path",
            )
        row = await self.locked(name)
        check_write_preconditions(if_match, row.resource_version, body.metadata.resourceVersion)
        await self.check_spec(body)
        before = self.comparable_spec(row)
        row.labels = body.metadata.labels or {}
        row.annotations = body.metadata.annotations or {}
        change = await self.apply_spec(row, body)
        spec_changed = self.comparable_spec(row) != before
        row = await self.repository.touch(row, spec_changed=spec_changed)
        await self.after_update(row, body, change, spec_changed=spec_changed)
        out = self.render(row)
        self._cache_after_commit(out)
        self.record_audit("update", name)
        return out

    async def patch(self, name: str, patch: dict[str, Any], if_match: str | None) -> OutT:
        row = await self.locked(name)
        merged = merge_patch(self.editable(row), patch)
        metadata = merged.get("metadata") if isinstance(merged, dict) else None
        if not isinstance(metadata, dict):
            raise invalid_field("metadata", "must be an object")
        if metadata.get("name") != name:
            raise invalid_field("metadata.name", "a patch cannot change it")
        body: InT = validate_as(self.in_model, merged)  # type: ignore[assignment]
        return await self.replace(name, body, if_match)

    async def delete(self, name: str, if_match: str | None, *, orphan: bool = False) -> OutT:
        """`orphan`: leave what the object made elsewhere (kinds that make nothing ignore it)."""
        row = await self.locked(name)
        check_write_preconditions(if_match, row.resource_version)
        await self.check_delete(row)
        out = self.render(row)
        version = await self.repository.delete(row)
        self._cache_after_commit(out, deleted_at=version)
        self.record_audit("delete", name)
        return out

"""The chart repository's storage and its Helm index."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

import yaml
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from app.catalog.charts import SEMVER, ChartInfo
from app.db.base import resource_version_seq
from app.errors import Conflict
from app.models.catalog import ChartArchive
from app.redis import RedisGateway, RedisUnavailable
from app.redis import key as redis_key

INDEX_CACHE_SECONDS = 3600


def semver_key(version: str) -> tuple[Any, ...]:
    """Order SemVer 2 versions: a release after its pre-releases, numeric identifiers by value."""
    match = SEMVER.match(version)
    if match is None:
        return (0, 0, 0, 0, ())
    major, minor, patch, pre = int(match[1]), int(match[2]), int(match[3]), match[4]
    if pre is None:
        return (major, minor, patch, 1, ())
    parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (major, minor, patch, 0, parts)


def chart_version_entry(row: ChartArchive) -> dict[str, Any]:
    """One entry of index.yaml (Helm's ChartVersion: Chart.yaml plus urls, created, digest)."""
    entry = dict(row.chart_metadata)
    entry.update(
        {
            "urls": [f"charts/{row.filename}"],
            "created": row.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "digest": row.digest,
        }
    )
    return entry


class ChartStore:
    def __init__(self, session: AsyncSession, redis: RedisGateway) -> None:
        self.session = session
        self.redis = redis

    def _listing(self) -> Any:
        return select(ChartArchive).options(defer(ChartArchive.content))

    async def save(self, info: ChartInfo, archive: bytes, *, force: bool) -> bool:
        """Store the archive; True if it was new. 409 if it exists and `force` is not set."""
        existing = await self.session.scalar(
            select(ChartArchive)
            .where(ChartArchive.name == info.name, ChartArchive.version == info.version)
            .with_for_update()
        )
        values = {
            "app_version": info.app_version,
            "description": info.description,
            "api_version": info.api_version,
            "chart_metadata": info.metadata,
            "digest": info.digest,
            "size": info.size,
            "content": archive,
            "resource_version": await self.session.scalar(resource_version_seq.next_value()),
        }
        if existing is not None:
            if not force:
                raise Conflict(
                    f"chart {info.name} {info.version} already exists; "
                    "versions are immutable (use ?force=true to overwrite)",
                    code="AlreadyExists",
                )
            for attribute, value in values.items():
                setattr(existing, attribute, value)
            existing.created_at = datetime.now(UTC)
            await self.session.flush()
            return False
        self.session.add(
            ChartArchive(
                name=info.name,
                version=info.version,
                filename=f"{info.name}-{info.version}.tgz",
                **values,
            )
        )
        try:
            async with self.session.begin_nested():
                await self.session.flush()
        except IntegrityError:
            # Another upload of the same name and version committed first.
            raise Conflict(
                f"chart {info.name} {info.version} already exists", code="AlreadyExists"
            ) from None
        return True

    async def archive(self, filename: str) -> ChartArchive | None:
        row: ChartArchive | None = await self.session.scalar(
            select(ChartArchive).where(ChartArchive.filename == filename)
        )
        return row

    async def versions(self, name: str | None = None) -> list[ChartArchive]:
        query = self._listing()
        if name is not None:
            query = query.where(ChartArchive.name == name)
        rows = list((await self.session.scalars(query)).all())
        return sorted(rows, key=lambda r: (r.name, semver_key(r.version)))

    async def version(self, name: str, version: str) -> ChartArchive | None:
        row: ChartArchive | None = await self.session.scalar(
            self._listing().where(ChartArchive.name == name, ChartArchive.version == version)
        )
        return row

    async def delete(self, name: str, version: str) -> bool:
        result = await self.session.execute(
            delete(ChartArchive).where(ChartArchive.name == name, ChartArchive.version == version)
        )
        return bool(getattr(result, "rowcount", 0))

    async def index_etag(self) -> str:
        count, newest = (
            await self.session.execute(
                select(func.count(), func.coalesce(func.max(ChartArchive.resource_version), 0))
            )
        ).one()
        return f'"{count}-{newest}"'

    async def index_yaml(self, etag: str, *, only: str | None = None) -> bytes:
        """index.yaml for the repository at `etag`, from Redis when another request built it;
        `only`: the index of that one chart (not cached: seldom asked)."""
        cache_key = redis_key("chartrepo", "index", etag.strip('"'), tag="chartrepo")
        cached = None
        if only is None:
            try:
                cached = await self.redis.run(lambda c: c.get(cache_key))
            except RedisUnavailable:
                cached = None
        if isinstance(cached, bytes):
            return cached
        entries: dict[str, list[dict[str, Any]]] = {}
        for row in await self.versions(only):
            entries.setdefault(row.name, []).append(chart_version_entry(row))
        for versions in entries.values():
            versions.sort(key=lambda e: semver_key(str(e["version"])), reverse=True)
        document = {
            "apiVersion": "v1",
            "entries": entries,
            "generated": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "serverInfo": {},
        }
        rendered = yaml.safe_dump(document, sort_keys=False).encode()
        if only is not None:
            return rendered
        with contextlib.suppress(RedisUnavailable):
            await self.redis.run(lambda c: c.set(cache_key, rendered, ex=INDEX_CACHE_SECONDS))
        return rendered

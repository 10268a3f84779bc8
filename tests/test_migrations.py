"""Alembic: every revision upgrades and downgrades, and the models match the migrations."""

from __future__ import annotations

import asyncio

import asyncpg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from app.db import migrate
from app.models import Base
from tests.support.platform import fresh_database


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        sequences = await conn.fetch("SELECT sequencename FROM pg_sequences")
    finally:
        await conn.close()
    return {r["tablename"] for r in rows} | {r["sequencename"] for r in sequences}


async def test_upgrade_downgrade_upgrade(postgres_admin_url: str) -> None:
    async with fresh_database(postgres_admin_url, migrated=False) as url:
        await asyncio.to_thread(migrate.upgrade, url, "head")
        after_upgrade = await _tables(url)
        assert {"regions", "idempotency_keys", "resource_version_seq"} <= after_upgrade
        await asyncio.to_thread(migrate.downgrade, url, "base")
        assert await _tables(url) == {"alembic_version"}
        await asyncio.to_thread(migrate.upgrade, url, "head")
        assert await _tables(url) == after_upgrade


async def test_models_and_migrations_agree(database_url: str) -> None:
    engine = create_async_engine(database_url.replace("postgresql://", "postgresql+asyncpg://"))
    try:
        async with engine.connect() as conn:

            def diff(sync_conn):  # type: ignore[no-untyped-def]
                context = MigrationContext.configure(
                    sync_conn, opts={"compare_type": True, "compare_server_default": True}
                )
                return compare_metadata(context, Base.metadata)

            differences = await conn.run_sync(diff)
    finally:
        await engine.dispose()
    assert differences == []

"""The sessions requests get: a GET reads without a transaction, so a row lock (which would end
with its own statement there) is refused instead of silently protecting nothing; pooled
connections are pinged only after sitting idle, and a dead one is replaced."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest
from sqlalchemy import select, text

from app.db.engine import (
    PING_AFTER_IDLE_SECONDS,
    create_engine,
    create_reading_sessionmaker,
    create_sessionmaker,
)
from app.models.users import User
from tests.support.platform import make_settings


async def test_a_reading_session_refuses_row_locks(clean_database: str) -> None:
    engine = create_engine(make_settings(clean_database))
    try:
        async with create_reading_sessionmaker(engine)() as session:
            assert (await session.execute(select(User.name))).all() == []
            with pytest.raises(RuntimeError, match="a row lock needs a transaction"):
                await session.execute(select(User).with_for_update())
        async with create_sessionmaker(engine).begin() as session:
            await session.execute(select(User).with_for_update())  # in a transaction: fine
    finally:
        await engine.dispose()


async def test_a_pooled_connection_killed_while_idle_is_replaced(clean_database: str) -> None:
    engine = create_engine(make_settings(clean_database, database_pool_size=1))
    sessions = create_reading_sessionmaker(engine)
    try:
        async with sessions() as session:
            first = await session.scalar(text("SELECT pg_backend_pid()"))
        admin = await asyncpg.connect(clean_database)
        try:
            await admin.execute("SELECT pg_terminate_backend($1)", first)
        finally:
            await admin.close()
        await asyncio.sleep(PING_AFTER_IDLE_SECONDS + 0.1)
        async with sessions() as session:  # no error: pinged, found dead, replaced
            second = await session.scalar(text("SELECT pg_backend_pid()"))
        assert second != first
    finally:
        await engine.dispose()


async def test_json_columns_decode_exactly_as_the_standard_library(clean_database: str) -> None:
    """json and jsonb values come back as json.loads would give them: integers beyond 64 bits
    (a Helm value) stay integers, not floats."""
    document = (
        '{"replicas": 123456789012345678901234567890, "ratio": 0.1, "big": 1.5e300, '
        '"text": "\\u00e9\\ud83d\\ude00", "none": null, "list": [1, 2.0, true]}'
    )
    engine = create_engine(make_settings(clean_database))
    try:
        async with create_reading_sessionmaker(engine)() as session:
            for kind in ("json", "jsonb"):  # (jsonb writes 1.5e300 out in full: an integer)
                query = text(f"SELECT CAST(:doc AS {kind}), CAST(CAST(:doc AS {kind}) AS text)")
                value, as_text = (await session.execute(query, {"doc": document})).one()
                assert value == json.loads(as_text)
                assert value["replicas"] == 123456789012345678901234567890
    finally:
        await engine.dispose()

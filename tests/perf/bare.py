"""The baselines of API figures, served with the same server settings as the platform and
answering the same document (read from BARE_DOCUMENT):

- `/object`: a bare FastAPI JSON endpoint (the issue's baseline);
- `/object-db`: the same after one PostgreSQL round trip through the platform's own stack
  (SQLAlchemy async + asyncpg, same DATABASE_URL): the floor of any endpoint that reads the
  database at all, which shows what share of the gap the database itself costs."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.config import translate_database_url

DOCUMENT: dict[str, Any] = json.loads(Path(os.environ["BARE_DOCUMENT"]).read_text())
engine: AsyncEngine | None = None


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    global engine
    target = translate_database_url(os.environ["DATABASE_URL"])
    engine = create_async_engine(
        target.sqlalchemy_url, pool_size=10, max_overflow=10,  # the platform's defaults
        connect_args={"ssl": target.ssl} if target.ssl is not None else {},
    )  # fmt: skip
    yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


@app.get("/object")
async def read_object() -> dict[str, Any]:
    return DOCUMENT


@app.get("/object-db")
async def read_object_after_one_query() -> dict[str, Any]:
    assert engine is not None
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    return DOCUMENT

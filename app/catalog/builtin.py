"""Offline built-in charts: every .tgz of a folder loaded into the repository when absent.

Safe with several API replicas starting at once: a version another replica stored first is
simply skipped (the unique constraint decides)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.catalog.chartrepo import ChartStore
from app.catalog.charts import InvalidChart, inspect_chart
from app.errors import Conflict
from app.redis import RedisGateway

logger = logging.getLogger(__name__)

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def default_charts_dir() -> Path | None:
    """charts/builtin in a checkout, or the copy shipped inside the wheel."""
    for candidate in (_PACKAGE_DIR.parent / "charts" / "builtin", _PACKAGE_DIR / "_charts"):
        if candidate.is_dir():
            return candidate
    return None


async def load_charts(
    sessionmaker: async_sessionmaker[AsyncSession], redis: RedisGateway, folder: Path
) -> list[str]:
    """Store each valid archive of `folder` that the repository lacks; returns what was added."""
    added = []
    archives = await asyncio.to_thread(
        lambda: [(p.name, p.read_bytes()) for p in sorted(folder.glob("*.tgz"))]
    )
    for filename, archive in archives:
        try:
            info = inspect_chart(archive)
        except InvalidChart as exc:
            logger.warning("built-in chart %s skipped: %s", filename, exc)
            continue
        try:
            async with sessionmaker.begin() as session:
                await ChartStore(session, redis).save(info, archive, force=False)
        except Conflict:
            continue  # already there (or another replica just stored it)
        added.append(f"{info.name}-{info.version}")
    if added:
        logger.info("loaded built-in charts from %s: %s", folder, ", ".join(added))
    return added

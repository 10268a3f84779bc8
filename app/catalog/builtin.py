"""Offline built-in charts: every .tgz of a folder loaded into the chart repository when absent,
and the charts named by BUILTIN_CHARTS put in the catalog as Applications with their versions.

Safe with several API replicas starting at once: a chart or catalog object another replica
stored first is simply skipped (the unique constraints decide)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.service import Actor, AuditTrail, RequestInfo
from app.catalog.chartrepo import ChartStore
from app.catalog.charts import ChartInfo, InvalidChart, inspect_chart
from app.catalog.schemas import (
    ApplicationIn,
    ApplicationSpec,
    ApplicationVersionIn,
    ApplicationVersionSpec,
    HelmSource,
    version_name,
)
from app.catalog.service import (
    ApplicationRepository,
    ApplicationService,
    ApplicationVersionRepository,
    ApplicationVersionService,
)
from app.config import BuiltinChart
from app.errors import Conflict
from app.models.catalog import Application, ApplicationVersion
from app.redis import RedisGateway

logger = logging.getLogger(__name__)

_PACKAGE_DIR = Path(__file__).resolve().parent.parent
BUILTIN_LABEL = "theriseunion.io/builtin"
# What Chart.yaml's annotations may say about the catalog entry.
DISPLAY_NAME_ANNOTATION = "edge.theriseunion.io/display-name"
CATEGORY_ANNOTATION = "edge.theriseunion.io/category"
# Who the audit log says added them.
_STARTUP = AuditTrail(
    RequestInfo(source_ip=None, user_agent=None, request_id=None),
    Actor(name="start-up (BUILTIN_CHARTS)", kind="operator"),
)


def default_charts_dir() -> Path | None:
    """charts/builtin in a checkout, or the copy shipped inside the wheel."""
    for candidate in (_PACKAGE_DIR.parent / "charts" / "builtin", _PACKAGE_DIR / "_charts"):
        if candidate.is_dir():
            return candidate
    return None


async def load_charts(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: RedisGateway,
    folder: Path,
    catalog: list[BuiltinChart] | None = None,
) -> list[str]:
    """Store each valid archive of `folder` that the repository lacks, then make sure each
    chart of `catalog` is in the catalog; returns what was added to the repository."""
    added = []
    archives = await asyncio.to_thread(
        lambda: [(p.name, p.read_bytes()) for p in sorted(folder.glob("*.tgz"))]
    )
    found: dict[BuiltinChart, ChartInfo] = {}
    for filename, archive in archives:
        try:
            info = inspect_chart(archive)
        except InvalidChart as exc:
            logger.warning("built-in chart %s skipped: %s", filename, exc)
            continue
        found[BuiltinChart(info.name, info.version)] = info
        try:
            async with sessionmaker.begin() as session:
                await ChartStore(session, redis).save(info, archive, force=False)
        except Conflict:
            continue  # already there (or another replica just stored it)
        added.append(f"{info.name}-{info.version}")
    if added:
        logger.info("loaded built-in charts from %s: %s", folder, ", ".join(added))
    for chart in catalog or []:
        stored = found.get(chart)
        if stored is None:
            logger.error(
                "BUILTIN_CHARTS names %s %s, which is not among the built-in charts in %s "
                "(there: %s); it is not in the catalog",
                chart.name,
                chart.version,
                folder,
                ", ".join(f"{c.name}:{c.version}" for c in sorted(found)) or "none",
            )
            continue
        await _ensure_in_catalog(sessionmaker, stored)
    return added


async def _ensure_in_catalog(
    sessionmaker: async_sessionmaker[AsyncSession], info: ChartInfo
) -> None:
    """The chart's Application (helm) and its version, created when absent; never changed
    once there (an operator may have edited the application's description). A Conflict means
    another replica, starting at the same time, created it first: its transaction is over, and
    what it wanted is there."""
    name = version_name(info.name, info.version)
    annotations = info.metadata.get("annotations") or {}
    labels = {BUILTIN_LABEL: "true"}
    try:
        async with sessionmaker.begin() as session:
            provisioner = await session.scalar(
                select(Application.provisioner).where(Application.name == info.name)
            )
            if provisioner is None:
                application = ApplicationIn.model_validate(
                    {
                        "metadata": {"name": info.name, "labels": labels},
                        "spec": ApplicationSpec(
                            displayName=annotations.get(DISPLAY_NAME_ANNOTATION),
                            description=info.description,
                            category=annotations.get(CATEGORY_ANNOTATION),
                            provisioner="helm",
                        ),
                    }
                )
                await ApplicationService(
                    session, ApplicationRepository(session), audit=_STARTUP
                ).create(application)
            elif provisioner != "helm":
                logger.error(
                    "built-in chart %s %s is not in the catalog: application %r exists and is "
                    "provisioned by %s (rename it, or leave the chart out of BUILTIN_CHARTS)",
                    info.name,
                    info.version,
                    info.name,
                    provisioner,
                )
                return
    except Conflict:
        pass
    try:
        async with sessionmaker.begin() as session:
            if await session.scalar(
                select(ApplicationVersion.id).where(ApplicationVersion.name == name)
            ):
                return
            version = ApplicationVersionIn.model_validate(
                {
                    "metadata": {"name": name, "labels": labels},
                    "spec": ApplicationVersionSpec(
                        application=info.name,
                        version=info.version,
                        helm=HelmSource(chart=info.name, version=info.version),
                    ),
                }
            )
            await ApplicationVersionService(
                session, ApplicationVersionRepository(session), audit=_STARTUP
            ).create(version)
    except Conflict:
        return
    logger.info("built-in chart %s %s is in the catalog as %s", info.name, info.version, name)

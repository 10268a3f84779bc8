"""Gauges of the fleet as PostgreSQL holds it, for the dashboards and alerts: clusters by region
and phase, how stale the oldest probe is, rollouts by kind and phase. Every controller replica
measures them (every QUEUE_GAUGE_SECONDS, with its probe queue), so queries take the max over
replicas, never the sum."""

from __future__ import annotations

from typing import Any

from prometheus_client import Gauge
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.clusters import Cluster
from app.models.deployments import Rollout

CLUSTERS = Gauge("edge_clusters", "Registered clusters by region and phase.", ["region", "phase"])
PROBE_AGE = Gauge(
    "edge_cluster_probe_age_seconds",
    "Seconds since the least recently probed enabled cluster was probed (0: none probed); "
    "growing past the probe interval means the probers fall behind.",
)
ROLLOUTS = Gauge("edge_rollouts", "Rollouts by kind and phase.", ["kind", "phase"])
CLUSTER_PHASES = ("Pending", "Ready", "NotReady", "Unreachable", "Disabled")


class _LabelledGauge:
    """Sets a labelled gauge to a fresh count per label set, and drops the label sets that are
    gone (a deleted region must not stay on the dashboard at its last count)."""

    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge
        self._shown: set[tuple[str, ...]] = set()

    def show(self, counts: dict[tuple[str, ...], float]) -> None:
        for labels, value in counts.items():
            self._gauge.labels(*labels).set(value)
        for gone in self._shown - counts.keys():
            self._gauge.remove(*gone)
        self._shown = set(counts)


_clusters = _LabelledGauge(CLUSTERS)
_rollouts = _LabelledGauge(ROLLOUTS)


async def measure_fleet(session: AsyncSession, probed: Any) -> None:
    """`probed`: the condition of the clusters the probers look after."""
    rows = await session.execute(
        select(Cluster.region, Cluster.phase, func.count()).group_by(Cluster.region, Cluster.phase)
    )
    clusters: dict[tuple[str, ...], float] = {}
    for region, phase, count in rows.all():
        clusters[(region, phase)] = count
    for region in {region for region, _ in clusters}:
        for phase in CLUSTER_PHASES:  # every phase shown, zeros included, for stacked panels
            clusters.setdefault((region, phase), 0)
    _clusters.show(clusters)
    oldest = await session.scalar(
        select(func.extract("epoch", func.now() - func.min(Cluster.last_probe_time))).where(probed)
    )
    PROBE_AGE.set(float(oldest or 0))
    rows = await session.execute(
        select(Rollout.kind, Rollout.phase, func.count()).group_by(Rollout.kind, Rollout.phase)
    )
    _rollouts.show({(kind, phase): count for kind, phase, count in rows.all()})

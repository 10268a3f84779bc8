"""Cluster health: each enabled cluster is probed on an interval (`/version` and the node list)
and its status written back: phase, version, nodes, zones, node groups, conditions, times.

Phases: Pending (never reached) → Ready (a node is Ready) | NotReady (reachable, no ready
node) → Unreachable once probes have failed for CLUSTER_UNREACHABLE_AFTER; the last-known
status is kept, with `lastProbeTime`/`lastReadyTime` telling its age. Unreachable clusters are
probed with exponential backoff (up to 5 minutes) so a dead site costs little.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes_asyncio.client import CoreV1Api, VersionApi
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.cache import ObjectCache
from app.clusters.models import Cluster, NodeGroup
from app.clusters.schemas import cluster_out, effective_selector
from app.controller.claims import claim, held, release
from app.controller.dispatcher import nudge_cluster_targets
from app.controller.kube import REQUEST_TIMEOUT, ClusterTarget, KubeClients
from app.db.base import resource_version_seq
from app.redis import key as redis_key
from app.workspaces.schemas import LabelSelector

logger = logging.getLogger(__name__)

ZONE_LABEL = "topology.kubernetes.io/zone"
MAX_BACKOFF_SECONDS = 300.0

PROBES = Counter("edge_cluster_probes_total", "Cluster probes by result.", ["result"])
PROBE_SECONDS = Histogram(
    "edge_cluster_probe_duration_seconds",
    "Duration of one cluster probe.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20),
)
CLAIM_SECONDS = Histogram(
    "edge_controller_claim_duration_seconds", "Time to claim a batch of due work."
)
QUEUE_DEPTH = Gauge("edge_controller_queue_depth", "Clusters whose probe is due.")
CLUSTERS = Gauge("edge_clusters", "Registered clusters by phase.", ["phase"])


@dataclass(frozen=True)
class Node:
    name: str
    labels: dict[str, str]
    ready: bool


@dataclass(frozen=True)
class Observation:
    version: str
    nodes: list[Node]


def selector_matches(selector: LabelSelector, labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.matchLabels.items()):
        return False
    for expression in selector.matchExpressions:
        present = expression.key in labels
        value = labels.get(expression.key)
        if expression.operator == "In" and value not in expression.values:
            return False
        if expression.operator == "NotIn" and present and value in expression.values:
            return False
        if expression.operator == "Exists" and not present:
            return False
        if expression.operator == "DoesNotExist" and present:
            return False
    return True


async def observe(clients: KubeClients, target: ClusterTarget) -> Observation:
    api = await clients.client_for(target)
    version = await VersionApi(api).get_code(_request_timeout=REQUEST_TIMEOUT)
    listed = await CoreV1Api(api).list_node(_request_timeout=REQUEST_TIMEOUT)
    nodes = []
    for item in listed.items or []:
        conditions = (item.status.conditions if item.status else None) or []
        ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
        nodes.append(Node(item.metadata.name, dict(item.metadata.labels or {}), ready))
    return Observation(str(version.git_version), nodes)


def _now() -> datetime:
    return datetime.now(UTC)


def _condition(
    previous: list[dict[str, Any]], kind: str, status: bool, reason: str, message: str | None
) -> dict[str, Any]:
    text = "True" if status else "False"
    before = next((c for c in previous if c.get("type") == kind), None)
    changed = before is None or before.get("status") != text
    return {
        "type": kind,
        "status": text,
        "reason": reason,
        "message": message,
        "lastTransitionTime": _now().isoformat() if changed else before.get("lastTransitionTime"),  # type: ignore[union-attr]
    }


class ClusterProber:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        clients: KubeClients,
        cache: ObjectCache,
        *,
        interval: float,
        unreachable_after: float,
        concurrency: int = 50,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._clients = clients
        self._cache = cache
        self._interval = interval
        self._unreachable_after = unreachable_after
        self._concurrency = concurrency
        self._lease = max(60.0, 4 * REQUEST_TIMEOUT[0] + 2 * REQUEST_TIMEOUT[1])

    async def run_once(self) -> int:
        """Claim the clusters whose probe is due, probe them concurrently, write back."""
        ready = (
            Cluster.enabled.is_(True)
            & Cluster.kubeconfig_ciphertext.is_not(None)
            & (Cluster.next_probe_at <= func.now())
        )
        started = time.perf_counter()
        async with self._sessionmaker.begin() as session:
            QUEUE_DEPTH.set(float(await session.scalar(select(func.count()).where(ready)) or 0))
            counts = await session.execute(
                select(Cluster.phase, func.count()).group_by(Cluster.phase)
            )
            by_phase = {phase: count for phase, count in counts.all()}
            for phase in ("Pending", "Ready", "NotReady", "Unreachable", "Disabled"):
                CLUSTERS.labels(phase).set(by_phase.get(phase, 0))
            token, ids = await claim(
                session,
                Cluster,
                ready=ready,
                order_by=Cluster.next_probe_at,
                limit=self._concurrency,
                lease_seconds=self._lease,
            )
            rows = (await session.execute(
                select(Cluster.id, Cluster.uid, Cluster.name, Cluster.kubeconfig_key_id,
                       Cluster.kubeconfig_ciphertext).where(Cluster.id.in_(ids))
            )).all()  # fmt: skip
        CLAIM_SECONDS.observe(time.perf_counter() - started)
        targets = [
            ClusterTarget(r[0], str(r[1]), r[2], r[3], r[4])
            for r in rows
            if r[3] is not None and r[4] is not None  # claimed only with a kubeconfig
        ]
        try:
            await asyncio.gather(*(self._probe(token, target) for target in targets))
        finally:
            async with self._sessionmaker.begin() as session:
                await release(session, Cluster, token)
        return len(targets)

    async def _probe(self, token: Any, target: ClusterTarget) -> None:
        started = time.perf_counter()
        try:
            observation = await observe(self._clients, target)
        except Exception as exc:  # any failure to reach or read the cluster
            PROBES.labels("failure").inc()
            PROBE_SECONDS.observe(time.perf_counter() - started)
            await self._clients.forget(target.id)
            await self._write_back(self._record_failure(token, target, exc), target)
        else:
            PROBES.labels("success").inc()
            PROBE_SECONDS.observe(time.perf_counter() - started)
            await self._write_back(self._record_success(token, target, observation), target)

    async def _write_back(self, write: Any, target: ClusterTarget) -> None:
        try:
            await write
        except Exception:  # the database is down: the lease expires and the probe is redone
            logger.warning("could not record the probe of %s", target.name, exc_info=True)

    async def _write(
        self, token: Any, target: ClusterTarget, values: dict[str, Any], session: AsyncSession
    ) -> Cluster | None:
        values["resource_version"] = resource_version_seq.next_value()
        row: Cluster | None = await session.scalar(
            update(Cluster)
            .where(
                held(Cluster, target.id, token),
                # Disabled or re-pointed meanwhile: this result no longer describes it.
                Cluster.enabled.is_(True),
                Cluster.kubeconfig_ciphertext == target.ciphertext,
            )
            .values(**values)
            .returning(Cluster)
        )
        if row is None:
            logger.info("probe result for %s dropped: its lease was lost", target.name)
        return row

    async def _publish(self, row: Cluster) -> None:
        out = cluster_out(row)
        name = row.name
        await self._cache.put(
            redis_key(f"clusters/{name}", tag=f"clusters/{name}"),
            row.resource_version,
            out.model_dump(mode="json", by_alias=True),
        )

    async def _record_success(self, token: Any, target: ClusterTarget, seen: Observation) -> None:
        now = _now()
        ready_nodes = [n for n in seen.nodes if n.ready]
        async with self._sessionmaker.begin() as session:
            before = (
                await session.execute(
                    select(Cluster.conditions, Cluster.phase).where(Cluster.id == target.id)
                )
            ).one_or_none()
            previous, previous_phase = before if before else (None, None)
            conditions = [
                _condition(previous or [], "Reachable", True, "ProbeSucceeded", None),
                _condition(
                    previous or [],
                    "Ready",
                    bool(ready_nodes),
                    "NodesReady" if ready_nodes else "NoReadyNode",
                    f"{len(ready_nodes)} of {len(seen.nodes)} nodes ready",
                ),
            ]
            values: dict[str, Any] = {
                "phase": "Ready" if ready_nodes else "NotReady",
                "kubernetes_version": seen.version,
                "node_count": len(seen.nodes),
                "ready_node_count": len(ready_nodes),
                "zones": sorted(
                    {n.labels[ZONE_LABEL] for n in seen.nodes if ZONE_LABEL in n.labels}
                ),
                "conditions": conditions,
                "last_probe_time": now,
                "failing_since": None,
                "consecutive_failures": 0,
                "status_message": None,
                "next_probe_at": now + timedelta(seconds=self._interval),
            }
            if ready_nodes:
                values["last_ready_time"] = now
            row = await self._write(token, target, values, session)
            if row is None:
                return
            if row.phase != previous_phase:
                await nudge_cluster_targets(session, target.id)
            groups = (
                await session.scalars(select(NodeGroup).where(NodeGroup.cluster_id == target.id))
            ).all()
            for group in groups:
                selector = effective_selector(group)
                members = [n for n in seen.nodes if selector_matches(selector, n.labels)]
                status = (
                    len(members),
                    sum(n.ready for n in members),
                    sorted(n.name for n in members),
                )
                if status != (group.node_count, group.ready_node_count, list(group.nodes)):
                    group.node_count, group.ready_node_count, group.nodes = status
                    group.resource_version = int(
                        await session.scalar(resource_version_seq.next_value())
                    )
        await self._publish(row)

    async def _record_failure(self, token: Any, target: ClusterTarget, exc: Exception) -> None:
        now = _now()
        message = f"probe failed: {type(exc).__name__}: {str(exc)[:300]}"
        async with self._sessionmaker.begin() as session:
            current = (
                await session.execute(
                    select(Cluster.phase, Cluster.failing_since, Cluster.consecutive_failures,
                           Cluster.conditions).where(Cluster.id == target.id)
                )
            ).one_or_none()  # fmt: skip
            if current is None:
                return
            phase, failing_since, failures, previous = current
            previous_phase = phase
            failing_since = failing_since or now
            failures += 1
            overdue = (now - failing_since).total_seconds() >= self._unreachable_after
            if overdue:
                phase = "Unreachable"
                backoff = min(MAX_BACKOFF_SECONDS, self._interval * 2 ** min(failures, 10))
            else:
                backoff = self._interval
            conditions = [
                _condition(previous or [], "Reachable", False, "ProbeFailed", message),
                *[c for c in previous or [] if c.get("type") != "Reachable"],
            ]
            row = await self._write(
                token,
                target,
                {
                    "phase": phase,
                    "failing_since": failing_since,
                    "consecutive_failures": failures,
                    "last_probe_time": now,
                    "status_message": message,
                    "conditions": conditions,
                    "next_probe_at": now + timedelta(seconds=backoff),
                },
                session,
            )
            if row is not None and phase != previous_phase:
                await nudge_cluster_targets(session, target.id)
        if row is not None:
            await self._publish(row)

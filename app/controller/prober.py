"""Cluster health: each enabled cluster is probed on an interval (`/version` and the node list)
and its status written back: phase, version, nodes, zones, node groups, conditions, times.

Phases: Pending (never reached) → Ready (a node is Ready) | NotReady (reachable, no ready
node) → Unreachable once probes have failed for CLUSTER_UNREACHABLE_AFTER; the last-known
status is kept, with `lastProbeTime`/`lastReadyTime` telling its age. Unreachable clusters are
probed with exponential backoff (up to 5 minutes) so a dead site costs little.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import (
    ARRAY,
    BigInteger,
    Integer,
    String,
    Text,
    any_,
    bindparam,
    cast,
    func,
    null,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.cache import ObjectCache
from app.clusters.schemas import cluster_cache_key, cluster_document, effective_selector
from app.controller.claims import (
    QUEUE_GAUGE_SECONDS,
    TIMESTAMP,
    claim,
    release,
    row_arrays,
    unnest_rows,
)
from app.controller.gauges import measure_fleet
from app.controller.kube import REQUEST_TIMEOUT, ClusterTarget, get_json
from app.controller.kube_clients import KubeClients
from app.db.base import resource_version_seq
from app.deployments import target_rows
from app.models.clusters import Cluster, NodeGroup
from app.models.deployments import RolloutTarget
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
    version = await get_json(api, "/version")
    listed = await get_json(api, "/api/v1/nodes")
    nodes = []
    for item in listed.get("items") or []:
        conditions = (item.get("status") or {}).get("conditions") or []
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        meta = item["metadata"]
        nodes.append(Node(meta["name"], dict(meta.get("labels") or {}), ready))
    return Observation(str(version.get("gitVersion")), nodes)


def _now() -> datetime:
    return datetime.now(UTC)


def _condition(
    previous: list[dict[str, Any]],
    kind: str,
    status: bool,
    reason: str,
    message: str | None,
    at: datetime,
) -> dict[str, Any]:
    text = "True" if status else "False"
    before = next((c for c in previous if c.get("type") == kind), None)
    changed = before is None or before.get("status") != text
    return {
        "type": kind,
        "status": text,
        "reason": reason,
        "message": message,
        "lastTransitionTime": at.isoformat() if changed else before.get("lastTransitionTime"),  # type: ignore[union-attr]
    }


@dataclass(frozen=True)
class Probe:
    """What one probe found (`seen`) or how it failed (`error`), waiting to be written back."""

    target: ClusterTarget
    at: datetime
    seen: Observation | None = None
    error: Exception | None = None


# The status a probe writes, besides its times; a probe that changes none of it writes only the
# times (_TIMES), the common case, and the rest are written whole (_STATUS).
STATUS = (
    "phase",
    "kubernetes_version",
    "node_count",
    "ready_node_count",
    "zones",
    "nodes",
    "conditions",
    "status_message",
    "failing_since",
    "consecutive_failures",
)


JSON_STATUS = ("zones", "nodes", "conditions")  # sent as JSON text, stored as JSONB


def _write_statement(rows: Any, **values: Any) -> Any:
    """UPDATE of the batch's rows, each only while our lease holds (and released with it:
    its next probe is due later anyway); every write is a new resourceVersion."""
    return (
        update(Cluster)
        .where(Cluster.id == rows.c.id, Cluster.lock_token == bindparam("token"))
        .values(
            **values,
            last_probe_time=rows.c.probed,
            last_ready_time=func.coalesce(rows.c.ready_at, Cluster.last_ready_time),
            next_probe_at=rows.c.next_probe,
            resource_version=resource_version_seq.next_value(),
            lock_token=null(),
            lock_expires_at=null(),
        )
        .returning(Cluster)
    )


_TIME_COLUMNS = {"id": BigInteger, "probed": TIMESTAMP, "ready_at": TIMESTAMP,
                 "next_probe": TIMESTAMP}  # fmt: skip
_times = unnest_rows("probe", _TIME_COLUMNS)
_TIMES = _write_statement(_times)
_status = unnest_rows("probe", _TIME_COLUMNS | {
    "phase": String, "kubernetes_version": String, "node_count": Integer,
    "ready_node_count": Integer, "zones": Text, "nodes": Text, "conditions": Text,
    "status_message": String,
    "failing_since": TIMESTAMP, "consecutive_failures": Integer,
})  # fmt: skip
_STATUS = _write_statement(
    _status,
    **{key: _status.c[key] for key in STATUS if key not in JSON_STATUS},
    zones=cast(_status.c.zones, JSONB),
    nodes=cast(_status.c.nodes, JSONB),
    conditions=cast(_status.c.conditions, JSONB),
)


def _reached_the_same_way(target: ClusterTarget, connection: str, fingerprint: bytes) -> bool:
    """Whether the cluster is still reached as it was probed (same kubeconfig, or still
    through its agent): if not, the probe describes something else."""
    if target.agent or connection == "agent":
        return target.agent and connection == "agent"
    return fingerprint == hashlib.sha256(target.ciphertext or b"").digest()


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
        self._gauges_at = -QUEUE_GAUGE_SECONDS

    async def run_once(self) -> int:
        """Claim the clusters whose probe is due, probe them concurrently, write back."""
        agent = Cluster.connection_type == "agent"
        reachable = (agent & Cluster.agent_credential_hash.is_not(None)) | (
            ~agent & Cluster.kubeconfig_ciphertext.is_not(None)
        )  # a cluster behind NAT is probed once an agent has joined (Pending until then)
        probed = Cluster.enabled.is_(True) & reachable
        ready = probed & (Cluster.next_probe_at <= func.now())
        started = time.perf_counter()
        async with self._sessionmaker.begin() as session:
            if time.monotonic() - self._gauges_at >= QUEUE_GAUGE_SECONDS:
                self._gauges_at = time.monotonic()
                await self._measure(session, ready, probed)
            token, ids = await claim(
                session,
                Cluster,
                ready=ready,
                order_by=Cluster.next_probe_at,
                limit=self._concurrency,
                lease_seconds=self._lease,
            )
            if not ids:
                return 0
            rows = (
                await session.execute(
                    select(
                        Cluster.id,
                        Cluster.uid,
                        Cluster.name,
                        Cluster.kubeconfig_key_id,
                        Cluster.kubeconfig_ciphertext,
                        Cluster.connection_type,
                    ).where(Cluster.id.in_(ids))
                )
            ).all()
        CLAIM_SECONDS.observe(time.perf_counter() - started)
        targets = [
            ClusterTarget(id, str(uid), name, key_id, ciphertext, agent=connection == "agent")
            for id, uid, name, key_id, ciphertext, connection in rows
        ]
        results: asyncio.Queue[Probe | None] = asyncio.Queue()
        writer = asyncio.create_task(self._write_back(token, results))
        written = 0
        try:
            await asyncio.gather(*(self._probe(target, results) for target in targets))
        finally:
            results.put_nowait(None)
            written = await writer
            if written < len(ids):  # each write released its row; these were not written
                async with self._sessionmaker.begin() as session:
                    await release(session, Cluster, token)
        return len(targets)

    async def _measure(self, session: AsyncSession, ready: Any, probed: Any) -> None:
        QUEUE_DEPTH.set(float(await session.scalar(select(func.count()).where(ready)) or 0))
        await measure_fleet(session, probed)

    async def _probe(self, target: ClusterTarget, results: asyncio.Queue[Probe | None]) -> None:
        started = time.perf_counter()
        try:
            seen = await observe(self._clients, target)
        except Exception as exc:  # any failure to reach or read the cluster
            PROBES.labels("failure").inc()
            PROBE_SECONDS.observe(time.perf_counter() - started)
            results.put_nowait(Probe(target, _now(), error=exc))
            await self._clients.forget(target.id)
        else:
            PROBES.labels("success").inc()
            PROBE_SECONDS.observe(time.perf_counter() - started)
            results.put_nowait(Probe(target, _now(), seen=seen))

    async def _write_back(self, token: uuid.UUID, results: asyncio.Queue[Probe | None]) -> int:
        """Write the results as they come, all those that came meanwhile in one transaction:
        a slow cluster does not hold back the others' results, and 50 probes answered together
        cost a few statements, not 50 transactions. Returns how many rows were written."""
        written = 0
        while True:
            batch = [await results.get()]
            await asyncio.sleep(0)  # answers that arrived together are written together
            while not results.empty():
                batch.append(results.get_nowait())
            probes = [probe for probe in batch if probe is not None]
            if probes:
                try:
                    written += await self._record(token, probes)
                except Exception:  # the database is down: the lease expires, probes are redone
                    names = ", ".join(p.target.name for p in probes)
                    logger.warning("could not record the probes of %s", names, exc_info=True)
            if None in batch:
                return written

    async def _record(self, token: uuid.UUID, probes: list[Probe]) -> int:
        by_id = {probe.target.id: probe for probe in probes}
        times: list[dict[str, Any]] = []
        statuses: list[dict[str, Any]] = []
        moved: list[int] = []  # clusters whose phase changed
        async with self._sessionmaker.begin() as session:
            current = (
                await session.execute(
                    select(Cluster.id, Cluster.connection_type,
                           func.sha256(Cluster.kubeconfig_ciphertext),
                           *(getattr(Cluster, key) for key in STATUS))
                    .where(Cluster.id == any_(bindparam("ids", list(by_id), ARRAY(BigInteger))),
                           Cluster.lock_token == token, Cluster.enabled.is_(True))
                    .order_by(Cluster.id)
                    # NO KEY UPDATE, as the UPDATE below takes: a FOR UPDATE here also blocked
                    # inserts that refer to these clusters (a deployment's targets), and with
                    # their locks taken in another order the two deadlocked.
                    .with_for_update(key_share=True)
                )
            ).all()  # fmt: skip
            for cluster_id, connection, fingerprint, *before in current:
                probe = by_id.pop(cluster_id)
                if not _reached_the_same_way(probe.target, connection, fingerprint):
                    by_id[cluster_id] = probe  # re-pointed meanwhile: it describes another
                    continue
                previous = dict(zip(STATUS, before, strict=True))
                status, row = self._status_after(previous, probe)
                if status == previous:
                    times.append(row)
                else:
                    statuses.append(row | status)
                    if status["phase"] != previous["phase"]:
                        moved.append(cluster_id)
            for probe in by_id.values():
                logger.info("probe result for %s dropped: its lease was lost", probe.target.name)
            written: list[Cluster] = []
            for statement, rows in ((_TIMES, times), (_STATUS, statuses)):
                if rows:
                    written.extend(
                        (
                            await session.scalars(
                                statement,
                                {"token": token} | row_arrays(rows, JSON_STATUS),
                                execution_options={"synchronize_session": False},
                            )
                        ).all()
                    )
            await self._count_node_groups(
                session, [p for p in probes if p.seen is not None and p.target.id not in by_id]
            )
        await asyncio.gather(*(self._publish(row) for row in written))
        for cluster_id in moved:
            # Each in a transaction of its own: several clusters' targets locked in one would
            # not be in id order, and could deadlock with a rollout locking its targets.
            async with self._sessionmaker.begin() as session:
                await target_rows.nudge(session, RolloutTarget.cluster_id == cluster_id)
        return len(written)

    def _status_after(
        self, previous: dict[str, Any], probe: Probe
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The status after `probe` and the row of its times."""
        at = probe.at
        conditions_before: list[dict[str, Any]] = previous["conditions"] or []
        if probe.seen is not None:
            nodes = probe.seen.nodes
            ready_nodes = [n for n in nodes if n.ready]
            status: dict[str, Any] = {
                "phase": "Ready" if ready_nodes else "NotReady",
                "kubernetes_version": probe.seen.version,
                "node_count": len(nodes),
                "ready_node_count": len(ready_nodes),
                "zones": sorted({n.labels[ZONE_LABEL] for n in nodes if ZONE_LABEL in n.labels}),
                "nodes": [
                    {"name": n.name, "ready": n.ready, "labels": n.labels}
                    for n in sorted(nodes, key=lambda n: n.name)
                ],
                "conditions": [
                    _condition(conditions_before, "Reachable", True, "ProbeSucceeded", None, at),
                    _condition(
                        conditions_before,
                        "Ready",
                        bool(ready_nodes),
                        "NodesReady" if ready_nodes else "NoReadyNode",
                        f"{len(ready_nodes)} of {len(nodes)} nodes ready",
                        at,
                    ),
                ],
                "status_message": None,
                "failing_since": None,
                "consecutive_failures": 0,
            }
            ready_at, delay = (at if ready_nodes else None), self._interval
        else:
            exc = probe.error
            message = f"probe failed: {type(exc).__name__}: {str(exc)[:300]}"
            failing_since = previous["failing_since"] or at
            failures = previous["consecutive_failures"] + 1
            overdue = (at - failing_since).total_seconds() >= self._unreachable_after
            status = previous | {
                "phase": "Unreachable" if overdue else previous["phase"],
                "conditions": [
                    _condition(conditions_before, "Reachable", False, "ProbeFailed", message, at),
                    *[c for c in conditions_before if c.get("type") != "Reachable"],
                ],
                "status_message": message,
                "failing_since": failing_since,
                "consecutive_failures": failures,
            }
            delay = self._interval
            if overdue:
                delay = min(MAX_BACKOFF_SECONDS, self._interval * 2 ** min(failures, 10))
            ready_at = None
        row = {
            "id": probe.target.id,
            "probed": at,
            "ready_at": ready_at,
            "next_probe": at + timedelta(seconds=delay),
        }
        return status, row

    async def _count_node_groups(self, session: AsyncSession, probes: list[Probe]) -> None:
        """Each node group's members among the nodes its cluster's probe saw."""
        if not probes:
            return
        seen = {p.target.id: p.seen for p in probes if p.seen is not None}
        groups = await session.scalars(
            select(NodeGroup).where(
                NodeGroup.cluster_id == any_(bindparam("clusters", list(seen), ARRAY(BigInteger)))
            )
        )
        for group in groups.all():
            selector = effective_selector(group)
            nodes = seen[group.cluster_id].nodes
            members = [n for n in nodes if selector_matches(selector, n.labels)]
            status = (len(members), sum(n.ready for n in members), sorted(n.name for n in members))
            if status != (group.node_count, group.ready_node_count, list(group.nodes)):
                group.node_count, group.ready_node_count, group.nodes = status
                group.resource_version = int(
                    await session.scalar(resource_version_seq.next_value())
                )

    async def _publish(self, row: Cluster) -> None:
        await self._cache.put(
            cluster_cache_key(row.name), row.resource_version, cluster_document(row)
        )

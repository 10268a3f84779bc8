"""The dispatcher's Prometheus metrics (names are part of the operator's contract: the chart's
alerts and the README use them)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

APPLIES = Counter(
    "edge_dispatch_applies_total", "Objects sets applied to edge clusters, by result.", ["result"]
)
FAILURES = Counter(
    "edge_dispatch_failures_total", "Targets that failed for their revision, by cause.", ["cause"]
)
RETRIES = Counter("edge_dispatch_retries_total", "Edge calls scheduled for a retry.")
DRIFT_REPAIRS = Counter("edge_dispatch_drift_repairs_total", "Objects re-applied after drift.")
LOST_LEASES = Counter("edge_dispatch_lost_leases_total", "Results dropped: the lease was lost.")
TIME_TO_READY = Histogram(
    "edge_dispatch_time_to_ready_seconds",
    "From the write that made a revision to its target being Ready at the edge.",
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
)
INFLIGHT = Gauge("edge_dispatch_inflight", "Targets this controller is working on.")
DUE = Gauge("edge_dispatch_due", "Targets due for work, this controller's last look.")

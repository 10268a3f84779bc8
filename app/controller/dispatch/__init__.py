"""Dispatch: makes each edge cluster hold what its rollouts declare, and reports back.

One row per (rollout, cluster) is the unit of work (`RolloutTarget`). The package is split by
concern, in the order a row goes through:

- `scheduler`: claims due rows with a lease, keeps the leases, runs a pass per row (bounded
  overall and per cluster), drains on stop (`Dispatcher`, what the controller runs).
- `context`: what a pass works from (`Context`, read with the claim) and hands back (`Outcome`).
- `reconciler`: one pass: render, apply or check for drift, read back (the edge calls).
- `kinds`: what differs by rollout kind (ApplicationDeployment, ConfigSync, VCluster).
- `decisions`: what the edge's answers mean: retry, fail, pause, roll back, Ready (pure).
- `writeback`: outcomes written under their leases, batched, with their events.
- `folding`: each rollout's phase folded from its targets after their write-backs.
"""

from app.controller.dispatch.scheduler import Dispatcher

__all__ = ["Dispatcher"]

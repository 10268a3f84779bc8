"""Folding rollouts' phases after their targets' write-backs: every rollout asked for is
folded, again if asked while its fold ran, and only a few at once (each fold holds one of the
controller's pooled database connections)."""

from __future__ import annotations

import asyncio

from app.controller.dispatch.folding import Coalesced


async def test_a_burst_of_rollouts_is_folded_a_few_at_a_time_and_none_is_left_out() -> None:
    running: set[int] = set()
    most_at_once = 0
    folds: list[int] = []
    release = asyncio.Event()

    async def fold(rollout: int) -> None:
        nonlocal most_at_once
        running.add(rollout)
        most_at_once = max(most_at_once, len(running))
        await release.wait()
        folds.append(rollout)
        running.discard(rollout)

    folding = Coalesced(fold, "folding", concurrency=3)
    for rollout in range(50):
        folding.request(rollout)
    await asyncio.sleep(0.05)
    assert running == {0, 1, 2}  # the rest wait for a connection's worth of room
    folding.request(0)  # a target of rollout 0 written back while its fold runs
    release.set()
    await asyncio.wait_for(folding.close(), 5)
    assert most_at_once == 3
    assert sorted(folds) == sorted([*range(50), 0])  # rollout 0 folded once more, after

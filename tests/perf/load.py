"""Load generation: closed loop for maximum throughput, open loop (fixed arrival times) for
latency, so that a stall shows as latency instead of as fewer requests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Call = Callable[[int], Awaitable[None]]


@dataclass
class Result:
    done: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def closed_loop(call: Call, *, concurrency: int, seconds: float) -> Result:
    """`concurrency` callers, each calling again as soon as the last call returned."""
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    counter = iter(range(10**9))

    async def worker() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await call(next(counter))
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Result(len(latencies), time.perf_counter() - started, latencies)


async def open_loop(call: Call, *, rate: float, seconds: float) -> Result:
    """Calls start at fixed times, `rate` per second, whatever the answers do; each latency is
    measured from the time the call was due."""
    total = max(1, int(rate * seconds))
    latencies: list[float] = []
    start = time.perf_counter()

    async def one(index: int) -> None:
        due = start + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await call(index)
        latencies.append(time.perf_counter() - due)

    await asyncio.gather(*(one(i) for i in range(total)))
    return Result(total, time.perf_counter() - start, latencies)

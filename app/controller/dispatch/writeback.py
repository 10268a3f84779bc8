"""The write-back of passes: each pass's outcome written to its target row under the lease it
was claimed with, with its events. Passes finishing together are written in one transaction,
one UPDATE per set of columns written (a commit per pass was most of the database's work at a
thousand targets). A row whose lease was lost (to another replica, or the rollout is gone) is
not written; a row that asks for something new meanwhile (a new revision, a removal) keeps
only the facts of what was applied, and the next pass does the rest."""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Integer,
    Text,
    case,
    cast,
    delete,
    func,
    null,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.controller.claims import TIMESTAMP, held, row_arrays, unnest_rows
from app.controller.dispatch.context import Context, Outcome, now
from app.controller.dispatch.kinds import RolloutKind
from app.controller.dispatch.metrics import LOST_LEASES, TIME_TO_READY
from app.deployments import target_rows
from app.events.service import NewEvent, announce, record
from app.models.deployments import Rollout, RolloutTarget
from app.redis import RedisGateway

logger = logging.getLogger(__name__)

# What a pass did at the edge: kept even when the row changed meanwhile, so that the next pass
# knows which objects exist there.
APPLIED_FACTS = frozenset(
    {"applied_revision", "applied_hash", "applied_objects", "applied_at", "previous_revision"}
)


@dataclass
class _Result:
    """A pass's result waiting for its write-back."""

    row_id: int
    token: uuid.UUID
    ctx: Context
    outcome: Outcome
    written: asyncio.Future[None]


class WriteBack:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        redis: RedisGateway,
        kinds: dict[str, RolloutKind],
        fold: Callable[[int], None],
    ) -> None:
        self._sessionmaker = sessionmaker
        self._redis = redis
        self._kinds = kinds
        self._fold = fold  # asks for a rollout's phase to be folded again
        self._results: list[_Result] = []  # passes done, waiting for their write-back
        self._writer: asyncio.Task[None] | None = None

    async def write(self, row_id: int, token: uuid.UUID, ctx: Context, outcome: Outcome) -> None:
        """Record the pass under the lease, with its events; returns once committed."""
        result = _Result(row_id, token, ctx, outcome, asyncio.get_running_loop().create_future())
        self._results.append(result)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_results())
        # Shielded: a pass cancelled meanwhile (the controller stops) still has its result
        # written, or dropped whole.
        await asyncio.shield(result.written)

    async def close(self) -> None:
        """Let the results waiting be written, or dropped (the controller stops)."""
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)

    async def _write_results(self) -> None:
        try:
            while self._results:
                batch, self._results = self._results, []
                try:
                    committed = [(batch, await self._write_batch(batch))]
                except Exception as exc:
                    if len(batch) == 1:
                        _settle(batch[0], exc)
                        continue
                    # One result the database refuses must not hold back the others.
                    committed = []
                    for result in batch:
                        try:
                            committed.append(([result], await self._write_batch([result])))
                        except Exception as exc:
                            _settle(result, exc)
                # Only once committed, and outside the retry above: a result written twice
                # would find its lease gone with the first write.
                for results, (written, events) in committed:
                    try:
                        await self._after_commit(written, events)
                    except Exception:  # announcing is best effort; the rows are written
                        logger.warning("after a dispatch write-back", exc_info=True)
                    for result in results:
                        _settle(result, None)
        finally:
            self._writer = None

    async def _write_batch(
        self, batch: list[_Result]
    ) -> tuple[list[_Result], dict[int, list[NewEvent]]]:
        """One transaction: (the results written, their events per workspace)."""
        at = now()
        written: list[_Result] = []
        events: dict[int, list[NewEvent]] = {}
        async with self._sessionmaker.begin() as session:
            ordered = sorted(batch, key=lambda r: r.row_id)
            await target_rows.lock_ids(session, [r.row_id for r in ordered])
            updated = await self._update_rows(
                session, [r for r in ordered if not r.outcome.remove_row], at
            )
            for result in ordered:
                found = await self._write_row(session, result, updated)
                if found is not None:
                    written.append(result)
                    events.setdefault(result.ctx.deployment.workspace_id, []).extend(found)
            for workspace_id in sorted(events):  # locks at commit in one order, too
                await record(session, workspace_id, events[workspace_id])
        return written, events

    async def _update_rows(
        self, session: AsyncSession, results: list[_Result], at: datetime
    ) -> set[int]:
        """Write the passes of rows still held and still asking for what their pass worked
        on, one statement per set of columns written (most passes of a batch write the same
        set); returns the ids written. The others are left to the row-by-row path."""
        shapes: dict[tuple[str, ...], list[tuple[_Result, dict[str, Any]]]] = {}
        for result in results:
            values = _row_values(result.outcome)
            shapes.setdefault(tuple(sorted(values)), []).append((result, values))
        written: set[int] = set()
        for shape, rows in shapes.items():
            arrays = row_arrays(
                [
                    {
                        "row_id": result.row_id,
                        "lease": result.token,
                        "desired": result.ctx.target.desired_revision,
                        "was_removing": result.ctx.target.removing,
                        "seen_next": result.ctx.target.next_attempt_at,
                        "next_at": at + timedelta(seconds=result.outcome.delay),
                        "at": at,
                    }
                    | values
                    for result, values in rows
                ],
                _JSON_COLUMNS,
            )
            found = await session.execute(_batch_update(shape), arrays)
            written.update(found.scalars().all())
        return written

    async def _after_commit(
        self, written: list[_Result], events: dict[int, list[NewEvent]]
    ) -> None:
        for workspace_id, recorded in events.items():
            if recorded:
                await announce(self._redis, workspace_id)
        for result in written:
            if result.outcome.ready_after is not None:
                TIME_TO_READY.observe(max(0.0, result.outcome.ready_after))
            # Folded in the background. Should the fold fail, the next write-back of any of
            # the rollout's targets folds it again (within the drift interval at most).
            self._fold(result.ctx.deployment.id)

    async def _write_row(
        self, session: AsyncSession, result: _Result, updated: set[int]
    ) -> list[NewEvent] | None:
        """The rest of one pass's write-back (`updated`: the rows the batch's UPDATE wrote):
        its events, or None when its lease was lost."""
        row_id, token, ctx, outcome = result.row_id, result.token, result.ctx, result.outcome
        events = _pass_events(ctx, outcome)
        if outcome.remove_row:
            written = await _remove_row(session, row_id, token, ctx)
        elif row_id in updated:
            written = "updated"
            events.extend(_target_phase_event(ctx, outcome))
            kind = self._kinds[ctx.deployment.kind]
            events.extend(await kind.after_write(session, ctx, outcome))
        else:
            written = await _keep_applied_facts(session, row_id, token, outcome)
            if written == "superseded":
                events.clear()
                outcome.ready_after = None
        if written == "lost":  # to another replica, or the rollout is gone: nothing written
            LOST_LEASES.inc()
            logger.info("dispatch result for target %d dropped: lease lost", row_id)
            return None
        return events


def _settle(result: _Result, error: BaseException | None) -> None:
    if result.written.done():
        return
    if error is None:
        result.written.set_result(None)
    else:
        result.written.set_exception(error)
        result.written.exception()  # retrieved: the pass may be gone (cancelled)


async def _remove_row(session: AsyncSession, row_id: int, token: uuid.UUID, ctx: Context) -> str:
    result = await session.execute(
        delete(RolloutTarget).where(
            held(RolloutTarget, row_id, token), _unchanged_since(ctx.target)
        )
    )
    if getattr(result, "rowcount", 0) == 1:
        return "removed"
    # Targeted again meanwhile: its objects are gone, the row stays for it.
    result = await session.execute(
        update(RolloutTarget)
        .where(held(RolloutTarget, row_id, token))
        .values(
            applied_objects=[],
            applied_revision=None,
            applied_hash=None,
            lock_token=None,
            lock_expires_at=None,
        )
    )
    return "superseded" if getattr(result, "rowcount", 0) == 1 else "lost"


async def _keep_applied_facts(
    session: AsyncSession, row_id: int, token: uuid.UUID, outcome: Outcome
) -> str:
    """A row the batch did not write: if still ours, a new revision or a removal came
    meanwhile; keep only the facts of what was applied, and leave the rest to the next
    pass."""
    facts = {k: v for k, v in outcome.values.items() if k in APPLIED_FACTS}
    result = await session.execute(
        update(RolloutTarget)
        .where(held(RolloutTarget, row_id, token))
        .values(**facts, lock_token=None, lock_expires_at=None)
    )
    return "superseded" if getattr(result, "rowcount", 0) == 1 else "lost"


def _unchanged_since(loaded: RolloutTarget) -> Any:
    """The row still asks for what this pass worked on (the API rewrites these when a new
    revision or a removal changes what the target should be)."""
    return (RolloutTarget.desired_revision == loaded.desired_revision) & (
        RolloutTarget.removing == loaded.removing
    )


def _row_values(outcome: Outcome) -> dict[str, Any]:
    """The columns a pass writes, as stored."""
    values = dict(outcome.values)
    if values.get("message") is not None:
        values["message"] = str(values["message"])[:1024]
    return values


def _pass_events(ctx: Context, outcome: Outcome) -> list[NewEvent]:
    rollout = ctx.deployment
    return [
        NewEvent(
            rollout.kind,
            rollout.name,
            reason,
            message,
            kind,
            ctx.cluster.name,
            rollout_id=rollout.id,
        )
        for kind, reason, message in outcome.events
    ]


def _target_phase_event(ctx: Context, outcome: Outcome) -> list[NewEvent]:
    """An event for a target entering a new phase (the message says why)."""
    rollout: Rollout = ctx.deployment
    phase = outcome.values.get("phase")
    if phase is None or phase == ctx.target.phase:
        return []
    revision = outcome.values.get("desired_revision", ctx.target.desired_revision)
    message = outcome.values.get("message") or f"revision {revision} is {phase}"
    return [
        NewEvent(
            rollout.kind,
            rollout.name,
            str(phase),
            str(message),
            "Warning" if phase in ("Failed", "Unreachable") else "Normal",
            ctx.cluster.name,
            str(phase),
            rollout.id,
        )
    ]


_JSON_COLUMNS = frozenset(
    c.name for c in RolloutTarget.__table__.columns if isinstance(c.type, JSONB)
)


@functools.lru_cache(maxsize=64)
def _batch_update(shape: tuple[str, ...]) -> Any:
    """The UPDATE of a batch's rows that write the columns `shape`, from one array per column
    (JSON columns as text), returning the ids written: each row only while our lease holds
    and while it still asks for what its pass worked on."""
    table = RolloutTarget.__table__.columns
    # The batch's own columns, beside those its passes write: which row under which lease,
    # what the pass worked on, when the row is next due (unless nudged meanwhile), when it
    # was written.
    kinds: dict[str, Any] = {
        "row_id": BigInteger,
        "lease": PG_UUID(as_uuid=True),
        "desired": Integer,
        "was_removing": Boolean,
        "seen_next": TIMESTAMP,
        "next_at": TIMESTAMP,
        "at": TIMESTAMP,
    } | {key: Text if key in _JSON_COLUMNS else table[key].type for key in shape}
    rows = unnest_rows("pass", kinds)
    t = RolloutTarget
    values: dict[str, Any] = {
        key: cast(rows.c[key], JSONB) if key in _JSON_COLUMNS else rows.c[key] for key in shape
    }
    if "phase" in shape:
        values["last_transition_time"] = case(
            (t.phase != rows.c.phase, rows.c.at), else_=t.last_transition_time
        )
    values |= {
        # Nudged during the pass (unpaused, its cluster came back): look again at once.
        "next_attempt_at": case(
            (t.next_attempt_at != rows.c.seen_next, func.now()), else_=rows.c.next_at
        ),
        "lock_token": null(),
        "lock_expires_at": null(),
    }
    return (
        update(t)
        .where(
            t.id == rows.c.row_id,
            t.lock_token == rows.c.lease,
            t.desired_revision == rows.c.desired,
            t.removing == rows.c.was_removing,
        )
        .values(**values)
        .returning(t.id)
        .execution_options(synchronize_session=False)
    )

"""An operator's change counts as done once the replica leading the log has built on it.

The ``keyherald`` command holds no live state: someone who can write Redis can show it an
older copy of the log for the few milliseconds it appends, then put the live log back, and
the change lands on a branch no agent follows. So after appending, the command waits for a
**witness**: an event appended after its own by another writer (the leader appends a
heartbeat as soon as it sees someone else's event), in a log whose state holds the change.
If a later event lacks it, the change was lost and is made again (a few times); if nobody
builds on it within a couple of heartbeat intervals, the command says it was not witnessed.
With no replica holding the lease there is nobody to witness: the command says so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from redis.exceptions import ResponseError

from keyherald.shared.events import (
    ClientUpdatedData,
    Event,
    EventType,
    KeyEventData,
    SubjectRevokedData,
    TokenRevokedData,
)
from keyherald.shared.lineage import freshness_bound
from keyherald.shared.state import KEY_RANK, State

from .context import IssuerContext
from .errors import IssuerError

__all__ = ["NotWitnessed", "Verdict", "Witnessed", "holds", "witnessed"]

T = TypeVar("T")
_KEY_EVENTS = frozenset(
    {EventType.KEY_PUBLISHED, EventType.KEY_ACTIVATED, EventType.KEY_RETIRED, EventType.KEY_REVOKED}
)
ATTEMPTS = 3
POLL = 0.02


class NotWitnessed(IssuerError):
    """No replica built on the change in time, or Redis kept dropping it."""

    code = "not_witnessed"


class Verdict(Enum):
    WITNESSED = "witnessed"
    NO_LEADER = "no_leader"
    """No replica holds the lease: nobody can witness; the change is in Redis as appended."""
    LOST = "lost"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class Witnessed:
    verdict: Verdict
    seq: int
    elapsed: float


def holds(state: State, events: Sequence[Event]) -> bool:
    """Does ``state`` hold the effect of ``events`` (or something that went further)?"""
    for event in events:
        data = event.data
        if event.type == EventType.TOKEN_REVOKED:
            token = TokenRevokedData.model_validate(data)
            if state.revoked_tokens.get(token.jti, 0) < token.expires_at and token.expires_at > state.time - 300:
                return False
        elif event.type == EventType.SUBJECT_REVOKED:
            subject = SubjectRevokedData.model_validate(data)
            cut = state.revoked_subjects.get(subject.sub)
            if (cut is None or cut.revoked_at < subject.revoked_at) and subject.expires_at > state.time - 300:
                return False
        elif event.type in _KEY_EVENTS:
            record = KeyEventData.model_validate(data).key
            held = state.keys.get(record.kid)
            if held is not None and KEY_RANK[held.state] < KEY_RANK[record.state]:
                return False
            if held is None and record.expires_at is None:
                return False  # gone before it could expire: not the log we appended to
        elif event.type == EventType.CLIENT_UPDATED:
            client = ClientUpdatedData.model_validate(data)
            if state.client_record(client.client_id) != (client.record or ""):
                return False
    return True


async def _lease_held(ctx: IssuerContext) -> bool:
    try:
        return int(await ctx.redis.pttl(ctx.names.leader)) > 0
    except ResponseError:
        return True


async def _watch(ctx: IssuerContext, events: Sequence[Event], timeout: float) -> Witnessed:
    started = time.monotonic()
    last = events[-1]
    if not await _lease_held(ctx):
        return Witnessed(Verdict.NO_LEADER, last.seq, 0.0)
    while True:
        state = await ctx.log.sync()
        moved_on = state.log != last.log or state.seq > last.seq
        elapsed = time.monotonic() - started
        if moved_on:
            verdict = Verdict.WITNESSED if holds(state, events) else Verdict.LOST
            return Witnessed(verdict, last.seq, elapsed)
        if elapsed >= timeout:
            return Witnessed(Verdict.TIMEOUT, last.seq, elapsed)
        await asyncio.sleep(POLL)


async def witnessed(
    ctx: IssuerContext, action: Callable[[], Awaitable[tuple[T, Sequence[Event]]]], *, timeout: float | None = None
) -> tuple[T, Witnessed]:
    """Run ``action`` (which appends and returns its result and its events) until a replica
    witnessed it; NotWitnessed when none did, or Redis kept dropping it."""
    limit = timeout if timeout is not None else 2 * freshness_bound(ctx.settings.heartbeat_interval)
    for _ in range(ATTEMPTS):
        result, events = await action()
        if not events:
            return result, Witnessed(Verdict.WITNESSED, (await ctx.log.sync()).seq, 0.0)
        outcome = await _watch(ctx, events, limit)
        if outcome.verdict in (Verdict.WITNESSED, Verdict.NO_LEADER):
            return result, outcome
        if outcome.verdict is Verdict.TIMEOUT:
            raise NotWitnessed(
                f"appended at seq {outcome.seq}, but no replica built on it within {limit:.0f}s: it may be on a copy"
                " of the log that agents do not follow (someone writing Redis?); check `keyherald log status`"
                " and run it again"
            )
    raise NotWitnessed(
        f"the change was dropped from the log {ATTEMPTS} times before a replica built on it: someone is"
        " rewriting Redis; nothing is confirmed"
    )

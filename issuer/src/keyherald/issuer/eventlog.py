"""Appending to the signed log: gap-free seq, the snapshot moved in the same breath.

Every append is a compare-and-set on the head seq, run as one Lua script that writes the
events at stream ids ``<seq>-0``, replaces the snapshot and trims what the new snapshot
covers. Any replica, and the ``keyherald`` command itself, may append: a writer that lost
the race re-reads the state and decides again, so seq never skips nor repeats.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from keyherald.shared.clock import Clock, system_clock
from keyherald.shared.envelope import MAX_SNAPSHOT_LENGTH, ControlKey
from keyherald.shared.errors import ProtocolError
from keyherald.shared.events import Event, Snapshot
from keyherald.shared.names import Names
from keyherald.shared.state import State

from .errors import AppendContention, CorruptState, NamespaceOwnedElsewhere, SnapshotTooLarge

__all__ = ["Draft", "EventLog", "Mutation"]

log = logging.getLogger("keyherald.issuer")

Draft = tuple[str, dict[str, Any]]
"""An event to be: its type and data. The log gives it seq, time and issuer."""

Mutation = Callable[[State, float], Awaitable[Sequence[Draft]]]
"""Decides, from the current verified state and the time, which events to append."""

_APPEND = """
local head = redis.call('GET', KEYS[3]) or '0'
if head ~= ARGV[1] then return {-1, 0} end
local seq = tonumber(ARGV[1])
local repaired = 0
for i = 4, #ARGV do
  seq = seq + 1
  local id = tostring(seq) .. '-0'
  local added = redis.pcall('XADD', KEYS[1], 'MINID', '~', ARGV[2], id, 'event', ARGV[i])
  if type(added) == 'table' and added.err then
    -- An entry someone else wrote above our head blocks the stream. The snapshot covers
    -- every event up to the head, so the stream may start afresh: readers lose nothing.
    redis.call('DEL', KEYS[1])
    redis.call('XADD', KEYS[1], id, 'event', ARGV[i])
    repaired = 1
  end
end
redis.call('SET', KEYS[2], ARGV[3])
redis.call('SET', KEYS[3], tostring(seq))
return {seq, repaired}
"""


class EventLog:
    def __init__(
        self,
        redis: Redis,
        names: Names,
        control: ControlKey,
        issuer: str,
        *,
        retain: int = 10_000,
        clock: Clock = system_clock,
    ) -> None:
        self._redis = redis
        self._names = names
        self._control = control
        self._anchor = control.anchor
        self._issuer = issuer
        self._retain = retain
        self._clock = clock
        self._script = redis.register_script(_APPEND)
        self._high_water = (0, 0.0)
        """The furthest (seq, time) this process has seen: the log must never go back."""
        self._known: tuple[str, Snapshot] | None = None
        """The last snapshot this process verified or sealed, by its exact text: the next
        append usually finds it in Redis and need not verify and parse it again."""

    @property
    def names(self) -> Names:
        return self._names

    async def read_state(self) -> State:
        """The state at the head, from the snapshot, verified: Redis is not trusted.

        A state older than one this process saw (a replayed old snapshot, a restored
        backup) is refused: building on it would fork the log. A restart accepts it.
        """
        try:
            raw_snapshot, raw_head = await self._redis.mget(self._names.snapshot, self._names.head)
        except UnicodeDecodeError:
            raise CorruptState("the stored snapshot or head is not text") from None
        if raw_snapshot is None:
            if raw_head not in (None, b"0", "0"):
                raise CorruptState(f"namespace {self._names.namespace} has events but no snapshot")
            self._check_forward(0, 0.0)
            return State(issuer=self._issuer)
        text = raw_snapshot.decode() if isinstance(raw_snapshot, bytes) else raw_snapshot
        known = self._known
        if known is not None and known[0] == text:
            snapshot = known[1]
        else:
            try:
                snapshot = self._anchor.open_snapshot(text)
            except ProtocolError as exc:
                raise CorruptState(f"the stored snapshot does not verify: {exc}") from None
            self._known = (text, snapshot)
        if snapshot.issuer != self._issuer:
            raise NamespaceOwnedElsewhere(
                f"namespace {self._names.namespace!r} belongs to issuer {snapshot.issuer!r}, "
                f"not {self._issuer!r} (set KEYHERALD_ISSUER or KEYHERALD_NAMESPACE)"
            )
        try:
            head = int(raw_head or 0)
        except ValueError:
            raise CorruptState("the stored head is not a number") from None
        if head != snapshot.seq:
            raise CorruptState(f"head seq {head} disagrees with snapshot seq {snapshot.seq}")
        self._check_forward(snapshot.seq, snapshot.time)
        return State.from_snapshot(snapshot)

    def _check_forward(self, seq: int, time: float) -> None:
        high_seq, high_time = self._high_water
        if seq < high_seq or time < high_time:
            raise CorruptState(
                f"the log in Redis went back from seq {high_seq} to {seq}: a restored backup or a replay;"
                " restart the issuer to accept it"
            )
        self._high_water = (seq, time)

    async def commit(self, mutation: Mutation, *, attempts: int = 64) -> list[Event]:
        """Append what ``mutation`` decides; retried on a fresh state when another writer won."""
        for attempt in range(attempts):
            state = await self.read_state()
            base = state.seq
            now = max(self._clock(), state.time)  # log time never goes backwards
            drafts = await mutation(state, now)
            if not drafts:
                return []
            events = [
                Event(seq=base + i, type=kind, time=now, issuer=self._issuer, data=data)
                for i, (kind, data) in enumerate(drafts, start=1)
            ]
            for event in events:
                state.apply(event)
            document = state.to_snapshot()
            sealed = [self._control.seal_event(e) for e in events]
            snapshot = self._control.seal_snapshot(document)
            if len(snapshot) > MAX_SNAPSHOT_LENGTH:
                raise SnapshotTooLarge(
                    f"the snapshot would be {len(snapshot)} bytes, over {MAX_SNAPSHOT_LENGTH}: too many live"
                    " revocations; revoke subjects rather than single tokens"
                )
            minid = max(0, state.seq - self._retain)
            try:
                result = await self._script(
                    keys=[self._names.events, self._names.snapshot, self._names.head],
                    args=[str(base), f"{minid}-0", snapshot, *sealed],
                )
            except ResponseError as exc:
                raise CorruptState(f"the event stream refused an append: {exc}") from None
            appended, repaired = (int(x) for x in cast(list[Any], result))
            if appended >= 0:
                if repaired:
                    log.warning("the event stream held entries above the head that we did not write: restarted it"
                                " after seq %d (the snapshot covers everything before)", base)
                self._high_water = (state.seq, state.time)
                self._known = (snapshot, document)
                return events
            await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))  # noqa: S311
        raise AppendContention(f"gave up appending after {attempts} contended attempts")

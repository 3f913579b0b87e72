"""Following the issuer's log on Redis: tail with XREAD, look at the stream's end when idle, heal.

Redis is an untrusted transport and an unreliable one. Everything read goes through
:class:`SignedState` (opened with the trust anchor, applied only when it extends the chain).
A gap or a break in the chain catches up from the stream with XRANGE, and failing that,
from the checkpoint. A lost connection is retried with capped, jittered exponential backoff
while ``verify`` keeps serving from memory.

When the idle wait ends with nothing read, and after every reconnect, the follower reads the
newest entry of the stream (a small signed record of how far the log goes): behind it on
our log, it catches up; on another log, it fetches the checkpoint and lets
:meth:`SignedState.adopt` judge it (a newer log resets, keeping every revocation; an older
one is refused). The checkpoint itself is fetched only then, and when enough events piled
up to compact the texts the cache file keeps, never on every idle read.

Nothing stops the loop but cancellation: an unexpected error is logged (its type only),
backed off and retried.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time

from redis.exceptions import RedisError, ResponseError

from keyherald.shared.chain import digest
from keyherald.shared.errors import MalformedMessage, ProtocolError
from keyherald.shared.names import Names
from keyherald.shared.state import Outcome

from .catchup import follow_tail
from .heap import release_freed
from .presence import PresenceWriter
from .signedstate import Adoption, SignedState
from .source import (
    BATCH,
    BLOCK_MS,
    CheckpointTooLarge,
    EntryId,
    LogSource,
    NoSnapshot,
    entry_id,
    event_value,
    text,
)

__all__ = ["BLOCK_MS", "Follower"]

log = logging.getLogger("keyherald.verifier")

BACKOFF_FIRST = 0.05
BACKOFF_CAP = 2.0
JUNK_WAIT_MS = 250
"""While entries beyond the next event's slot were all seen and skipped already, how long a
read blocks past them before looking again from the verified position."""
SKIPPED_SIZE = 1_024
"""Entries beyond the next event's slot remembered as seen (not re-verified, not re-counted)."""
REFUSED_CHECKPOINT_WAIT = (1.0, 60.0)
"""After a checkpoint was refused, how long (doubling) before fetching one again: junk of
many megabytes costs a bounded bandwidth, not a fetch every idle read."""


def _digest(value: object) -> bytes:
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogatepass")
    data = value if isinstance(value, bytes) else b"\x00"
    return hashlib.blake2b(data, digest_size=16).digest()


class Follower:
    """One task per agent: reads the stream and feeds the SignedState.

    **The read cursor** is the stream position after which the next event can be, and it
    moves only on what verified: past an event applied (to ``<seq>-0`` of the state's seq)
    and past any entry whose id lies within the slot of the last applied event (ids up to
    ``<seq>-*``). Genuine event ``seq+1`` lives at ``<seq+1>-0``, above that slot, so no
    entry the cursor passes, verified or junk, can hide it. An entry *beyond* the slot that
    does not verify as the next event (a forgery at ``9999999999-0``, an old log's event
    spliced in) leaves the cursor where it is; such entries are remembered in a small
    bounded set (by id and content) so they are verified and counted once, and when a read
    brings nothing but them the next read blocks for at most JUNK_WAIT_MS past them and
    then looks again from the cursor: junk costs a few reads a second, never a busy loop.
    """

    def __init__(
        self, source: LogSource, names: Names, signed: SignedState, *, block_ms: int | None = None,
        presence: PresenceWriter | None = None,
    ) -> None:
        self.source = source
        self.presence = presence
        self._presence_failing = False
        self._names = names
        self._signed = signed
        self._block_ms = BLOCK_MS if block_ms is None else block_ms
        self._cursor: EntryId = (signed.keys.state.seq, 0)
        self._error_replies = False
        self._skipped: dict[tuple[EntryId, bytes], None] = {}
        self._wait_from: EntryId | None = None
        self._looked_at = time.monotonic()
        self._refused_until = 0.0
        self._refused_wait = REFUSED_CHECKPOINT_WAIT[0]
        self._foreign_seen: object = None
        self._compact_at = BATCH
        self.connected = False
        self.disconnects = 0
        self.reconnects = 0
        self.failures = 0
        """Unexpected errors the loop survived (a bug, or something Redis sent that nobody foresaw)."""
        self.last_error: str | None = None
        self.lost_at: float | None = None

    @property
    def cursor(self) -> str:
        return f"{self._cursor[0]}-{self._cursor[1]}"

    def start_from_state(self) -> None:
        """Follow on from the state loaded (Redis, the cache file): look around on first contact."""
        self._cursor = (self._signed.keys.state.seq, 0)

    def _mark_connected(self) -> None:
        if not self.connected and self.last_error is not None:
            away = time.monotonic() - self.lost_at if self.lost_at is not None else 0.0
            log.info("reconnected to Redis after %.1fs; following from seq %d", away, self._signed.keys.state.seq)
            self.reconnects += 1
        self.connected = True
        self.last_error = None
        self.lost_at = None

    async def run(self) -> None:
        """Follow forever (until cancelled); never raises for Redis, protocol or other trouble."""
        delay = BACKOFF_FIRST
        look = True
        while True:
            _reraise_cancellation()
            try:
                if look:
                    await self.look()
                    look = False
                await self._report()
                await self._read_once()
                delay, self._error_replies = BACKOFF_FIRST, False
            except asyncio.CancelledError:
                raise
            except ResponseError:
                _reraise_cancellation()
                # Redis is there and answered, with an error (the stream key replaced by
                # another type, say): not a lost connection. Counted; logged once per streak.
                if not self._error_replies:
                    log.warning("Redis answers reads of the log with an error; validating from memory, retrying")
                self._error_replies = True
                self.failures += 1
                look = True
            except (RedisError, OSError) as exc:
                _reraise_cancellation()
                if self.connected:
                    log.warning("lost Redis (%s); validating from memory, reconnecting", type(exc).__name__)
                    self.disconnects += 1
                    self.lost_at = time.monotonic()
                self.connected = False
                self.last_error = type(exc).__name__
                look = True
            except Exception as exc:
                _reraise_cancellation()
                # Never the message: it may quote what Redis held. The type is enough to look.
                log.error("following hit an unexpected %s; validating from memory, retrying", type(exc).__name__)
                self.failures += 1
                self.last_error = type(exc).__name__
                look = True
            else:
                continue
            await asyncio.sleep(random.uniform(delay / 2, delay))  # noqa: S311 - jitter only
            delay = min(delay * 2, BACKOFF_CAP)

    async def _report(self) -> None:
        """Write the presence record when due; a refusal (an ACL without the presence keys)
        is logged once and never stops following."""
        presence = self.presence
        if presence is None:
            return
        state = self._signed.keys.state
        try:
            await presence.maybe_write((state.log, state.seq))
        except ResponseError as exc:
            presence.failures += 1
            if not self._presence_failing:
                log.warning("cannot write this agent's presence record (%s); following goes on", exc)
            self._presence_failing = True
            return
        self._presence_failing = False

    def _block(self) -> int:
        """The XREAD block: shorter when a presence write falls due sooner (never 0: forever)."""
        presence = self.presence
        if presence is None:
            return self._block_ms
        state = self._signed.keys.state
        due = presence.due_in((state.log, state.seq))
        return max(1, min(self._block_ms, int(due * 1000) + 1))

    async def _read_once(self) -> None:
        start, block, waiting = self._cursor, self._block(), self._wait_from is not None
        if self._wait_from is not None:
            start, block, self._wait_from = self._wait_from, min(JUNK_WAIT_MS, self._block_ms), None
        batch = await self.source.xread(f"{start[0]}-{start[1]}", block)
        self._mark_connected()
        if not batch:
            if not waiting or time.monotonic() - self._looked_at >= self._block_ms / 1000:
                await self.look()
            return
        fresh, last, skipped, signed = False, start, self._skipped, self._signed
        for raw_id, fields in batch:
            place = entry_id(raw_id)
            if place is None:  # not an id Redis gives; nothing to place or skip
                continue
            if place > last:
                last = place
            value = event_value(fields)
            mark = (place, _digest(value))
            if skipped and mark in skipped:
                if place[0] <= signed.keys.state.seq and place > self._cursor:
                    self._cursor, fresh = place, True  # a resync brought it within the slot
                continue
            fresh = True
            outcome, event = signed.offer_event(text(value))
            if outcome in (Outcome.GAP, Outcome.BROKEN):
                log.info("the log does not go on from seq %d here (%s): catching up", signed.keys.state.seq,
                         outcome.value)
                await self.look(gap=True)
                if event is not None and signed.keys.state.seq < event.seq:
                    self._skip(mark)  # what we hold does not reach it: no resync on it again
                return
            if outcome is Outcome.FOREIGN:
                assert event is not None
                await self.look()
                if signed.keys.state.log != event.log:
                    signed.refuse_foreign()  # a log we do not follow: an old one spliced in
                    self._skip(mark)
                return
            applied = signed.keys.state.seq
            if outcome is Outcome.APPLIED and (applied, 0) > self._cursor:
                self._cursor = (applied, 0)
            if place[0] <= applied:
                if place > self._cursor:
                    self._cursor = place
            else:
                self._skip(mark)
        if not fresh:
            self._wait_from = last
        if signed.pending_events >= self._compact_at:
            await self._compact()
            self._compact_at = signed.pending_events + BATCH

    def _skip(self, mark: tuple[EntryId, bytes]) -> None:
        self._skipped[mark] = None
        if len(self._skipped) > SKIPPED_SIZE:
            del self._skipped[next(iter(self._skipped))]

    async def look(self, *, gap: bool = False) -> None:
        """Where does the log end? Catch up on ours, or judge another log's checkpoint."""
        self._looked_at = time.monotonic()
        signed = self._signed
        newest = await self.source.last_entry()
        self._mark_connected()
        event = None
        if newest is not None:
            try:
                event_text = text(event_value(newest[1]))
                if isinstance(event_text, str):
                    event = signed.anchor.open_event(event_text, issuer=signed.issuer)
                    if event.log == signed.keys.state.log and event.seq == signed.keys.state.seq \
                            and digest(event_text) != signed.keys.state.head:
                        signed.refused["fork"] += 1
                        log.warning("the stream's newest event forks our log at seq %d", event.seq)
            except ProtocolError:
                event = None  # junk at the end of the stream: look no further than the cursor
        state = signed.keys.state
        if event is not None and event.log == state.log:
            if event.seq > state.seq:
                await self._catch_up()
            return
        if event is not None and not gap and (event.log in signed.left or event.time < state.log_started):
            # A genuine event of a log we left, or older than ours, put at the end of the
            # stream: nothing there can be adopted, so no checkpoint is fetched for it.
            if self._foreign_seen != (newest[0] if newest else None):
                self._foreign_seen = newest[0] if newest else None
                signed.refused["other_log"] += 1
            return
        if event is not None or gap:
            await self._from_checkpoint()

    async def _catch_up(self) -> None:
        signed = self._signed
        before = signed.keys.state.seq
        problem = await follow_tail(self.source, signed)
        if signed.keys.state.seq > before:
            self._cursor = max(self._cursor, (signed.keys.state.seq, 0))
        if problem is not None:
            await self._from_checkpoint()

    async def _from_checkpoint(self) -> None:
        if time.monotonic() < self._refused_until:
            return
        release_freed(await self._take_checkpoint())  # its temporaries are gone by now

    async def _take_checkpoint(self) -> int:
        """Fetch the checkpoint and let the state judge it; its length (0: none read)."""
        signed = self._signed
        checkpoint: object = ""
        try:
            raw = await self.source.checkpoint()
            checkpoint = text(raw)
            if not isinstance(checkpoint, str):
                raise MalformedMessage("the checkpoint is not ASCII text")
            snapshot = signed.open_snapshot(checkpoint)
        except NoSnapshot:
            return 0
        except CheckpointTooLarge:
            self._refuse_checkpoint("checkpoint_too_large")
            return 0
        except ProtocolError as exc:
            self._refuse_checkpoint(f"snapshot_{exc.code}")
            return len(checkpoint) if isinstance(checkpoint, str) else 0
        adoption = signed.adopt(checkpoint, snapshot)
        if adoption is Adoption.REFUSED:
            self._refuse_checkpoint(None)
            return len(checkpoint)
        if adoption in (Adoption.SAME, Adoption.BEHIND):
            # Fetched for nothing (a newest entry or a gap that promised more):
            # the next fetch waits, doubling, so such junk costs a bounded bandwidth.
            self._refuse_checkpoint(None)
            return len(checkpoint)
        self._refused_wait = REFUSED_CHECKPOINT_WAIT[0]
        if adoption in (Adoption.RESYNC, Adoption.RESET):
            self._cursor = (snapshot.seq, 0)
            self._skipped.clear()
            await follow_tail(self.source, signed)
            self._cursor = max(self._cursor, (signed.keys.state.seq, 0))
        return len(checkpoint)

    def _refuse_checkpoint(self, code: str | None) -> None:
        if code is not None:
            self._signed.refused[code] += 1
            log.warning("refused the checkpoint in Redis (%s)", code)
        self._refused_until = time.monotonic() + self._refused_wait
        self._refused_wait = min(self._refused_wait * 2, REFUSED_CHECKPOINT_WAIT[1])

    async def _compact(self) -> None:
        """Many events kept since the checkpoint we hold: take a newer checkpoint of our log."""
        if time.monotonic() < self._refused_until:
            return
        try:
            raw = await self.source.checkpoint()
            checkpoint = text(raw)
            if not isinstance(checkpoint, str):
                return
            snapshot = self._signed.open_snapshot(checkpoint)
        except (NoSnapshot, CheckpointTooLarge, ProtocolError):
            self._refused_until = time.monotonic() + self._refused_wait
            return
        if snapshot.log == self._signed.keys.state.log and snapshot.seq <= self._signed.keys.state.seq:
            self._signed.compact(checkpoint, snapshot)


def _reraise_cancellation() -> None:
    """redis-py may turn a cancellation that lands mid-command into a connection error; a
    follower that swallowed it would never stop, so a pending cancel always wins."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


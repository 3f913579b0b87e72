"""Following the issuer's log on Redis: bootstrap from the snapshot, tail with XREAD, heal.

Redis is an untrusted transport and an unreliable one. Everything read goes through
:class:`SignedState` (opened with the trust anchor before it is folded). A gap in seq, or
a position trimmed away, resyncs from the snapshot. A lost connection is retried with
capped, jittered exponential backoff while ``verify`` keeps serving from memory.

redis-py's defaults fight a long blocking read: the default socket timeout (5 s) kills an
XREAD BLOCK longer than it, and the default retries replay a command on a dead connection
for a while before telling us. :func:`connect` builds a client whose socket timeout
exceeds the block time and which never retries by itself: this loop owns the retries.
With a client the agent built, every command goes over one connection of the follower's
own, read raw (see :meth:`Follower._command`).

When the idle wait ends with nothing read, and after every reconnect, the follower compares
the snapshot with its state (:meth:`SignedState.adopt`): a newer one resyncs; one behind in
seq but later in time means the log restarted (an empty Redis where the issuer began again
with the same control key, or a restored backup) and resets, keeping every revocation; one
older in time is a replay and is refused.

Everything is read as bytes: an entry or snapshot that is not ASCII is refused and counted
like any other malformed message, not a crash in the client's decoder. (A client passed in
with ``decode_responses=True`` still works, but its decoder may fail on such bytes; the loop
survives that too, only less gracefully.) Nothing stops the loop but cancellation: an
unexpected error is logged (its type only), backed off and retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from keyherald.shared.errors import MalformedMessage, ProtocolError
from keyherald.shared.names import EVENT_FIELD, Names
from keyherald.shared.state import Outcome

from .signedstate import Adoption, SignedState

__all__ = ["BLOCK_MS", "Follower", "NoSnapshot", "connect"]

log = logging.getLogger("keyherald.verifier")

BLOCK_MS = 2_000
"""XREAD BLOCK time: also how often an idle agent re-checks the snapshot."""
SOCKET_MARGIN = 3.0
"""Seconds the socket timeout exceeds the block time (the server's reply may lag a little)."""
BATCH = 512
"""Entries read per XREAD; also how many event texts are kept before compacting to a snapshot."""
BACKOFF_FIRST = 0.05
BACKOFF_CAP = 2.0
JUNK_WAIT_MS = 250
"""While entries beyond the next event's slot were all seen and skipped already, how long a
read blocks past them before looking again from the verified position."""
SKIPPED_SIZE = 1_024
"""Entries beyond the next event's slot remembered as seen (not re-verified, not re-counted)."""

EntryId = tuple[int, int]
_UNREADABLE = object()
"""Stands for a snapshot the client itself could not decode (so there is no value to compare)."""


class NoSnapshot(Exception):
    """The namespace holds no snapshot yet: the issuer has not started (or Redis is empty)."""


def connect(url: str, *, block_ms: int | None = None) -> Redis:
    """A client fit for blocking reads: socket timeout above the block time, no hidden retries.

    A connection that dies silently (no RST: a partition, a dead NAT entry) is then noticed
    within block + SOCKET_MARGIN seconds, and the follower's own backoff takes over. Replies
    stay bytes: the follower decodes (and refuses) what it reads itself.
    """
    block = BLOCK_MS if block_ms is None else block_ms
    return Redis.from_url(
        url,
        decode_responses=False,
        socket_connect_timeout=2.0,
        socket_timeout=block / 1000 + SOCKET_MARGIN,
        socket_keepalive=True,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
    )


def _reraise_cancellation() -> None:
    """redis-py may turn a cancellation that lands mid-command into a connection error; a
    follower that swallowed it would never stop, so a pending cancel always wins."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _entry_id(value: object) -> EntryId | None:
    """``(ms, seq)`` of a stream id as Redis sends it (bytes), or None when it is not one."""
    raw = value.encode("ascii", "replace") if isinstance(value, str) else value
    if not isinstance(raw, bytes):
        return None
    ms, _, seq = raw.partition(b"-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return None


def _entries(response: Any) -> list[Any]:
    """The entries of an XREAD reply: RESP2 ``[[stream, entries]]``, RESP3 ``{stream:
    entries}``, or redis-py's RESP3 ``xread`` reply, ``{stream: [entries]}``."""
    batches = response.values() if isinstance(response, dict) else [b for _stream, b in response]
    entries: list[Any] = []
    for batch in batches:
        if batch and isinstance(batch[0], list) and (not batch[0] or isinstance(batch[0][0], list | tuple)):
            batch = [e for inner in batch if inner for e in inner]  # one level deeper (maybe empty)
        entries.extend(batch)
    return entries


def _position(seq: int) -> EntryId:
    """Where event ``seq`` lives in the stream (``<seq>-0``; ``0-0`` before the first)."""
    return seq, 0


def _text(value: object) -> object:
    if isinstance(value, bytes):
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            return None
    return value


_EVENT_KEY = EVENT_FIELD.encode()


def _event_value(fields: object) -> object:
    """The event field of an entry: a flat [field, value, ...] list as Redis sends it, or
    a dict (a client's xread)."""
    if isinstance(fields, list):
        if len(fields) == 2 and fields[0] == _EVENT_KEY:
            return fields[1]
        for i in range(0, len(fields) - 1, 2):
            if fields[i] in (_EVENT_KEY, EVENT_FIELD):
                return fields[i + 1]
        return None
    if not isinstance(fields, dict):
        return None
    value = fields.get(_EVENT_KEY)
    return fields.get(EVENT_FIELD) if value is None else value


def _digest(value: object) -> bytes:
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogatepass")
    data = value if isinstance(value, bytes) else b"\x00"
    return hashlib.blake2b(data, digest_size=16).digest()


def _snapshot_text(raw: object) -> str:
    text = _text(raw)
    if not isinstance(text, str):
        raise MalformedMessage("the snapshot is not ASCII text")
    return text


class Follower:
    """One task per agent: reads the stream and feeds the SignedState.

    **The read cursor** is the stream position after which the next event can be, and it
    moves only on what verified: past an event applied (to ``<seq>-0`` of the state's seq)
    and past any entry whose id lies within the slot of the last applied event (ids up to
    ``<seq>-*``). Genuine event ``seq+1`` lives at ``<seq+1>-0``, above that slot, so no
    entry the cursor passes, verified or junk, can hide it. An entry *beyond* the slot that
    does not verify as the next event (a forgery at ``9999999999-0``, a copy of an old event
    at a far id) leaves the cursor where it is: otherwise every later genuine event would sit
    below the cursor, unseen by XREAD until the idle snapshot poll.

    Such entries are remembered in a small bounded set (by id and content), so they are
    verified and counted once; when a read brings nothing but them, the next read blocks
    for at most JUNK_WAIT_MS *past* them and then looks again from the cursor. So junk
    beyond the slot costs a few reads a second, never a busy loop, and genuine events that
    appear below it (the stream deleted or its id reset to repair it) are seen within that
    wait. (Reading with XRANGE from the cursor was the alternative; it cannot block, so it
    would poll always, not only under attack.)
    """

    def __init__(
        self, redis: Redis, names: Names, signed: SignedState, *, block_ms: int | None = None,
        own_connection: bool = False,
    ) -> None:
        self._redis = redis
        self._own_connection = own_connection
        self._names = names
        self._stream = names.events
        self._signed = signed
        self._block_ms = BLOCK_MS if block_ms is None else block_ms
        self._cursor: EntryId = (0, 0)
        self._conn: Any = None
        self._error_replies = False
        self._skipped: dict[tuple[EntryId, bytes], None] = {}
        self._wait_from: EntryId | None = None
        self._seen_snapshot: object = None
        self._refused_snapshot: object = None
        self._reconciled_at = time.monotonic()
        self.connected = False
        self.disconnects = 0
        self.failures = 0
        """Unexpected errors the loop survived (a bug, or something Redis sent that nobody foresaw)."""
        self.last_error: str | None = None

    @property
    def cursor(self) -> str:
        return f"{self._cursor[0]}-{self._cursor[1]}"

    def _mark_connected(self) -> None:
        if not self.connected and self.last_error is not None:
            log.info("Redis is back; following from seq %d", self._signed.keys.state.seq)
        self.connected = True
        self.last_error = None

    async def _get_snapshot(self) -> object:
        try:
            raw: object = (
                await self._command("GET", self._names.snapshot) if self._own_connection
                else await self._redis.get(self._names.snapshot)
            )
        except UnicodeDecodeError:  # a client that decodes replies, given bytes that are not UTF-8
            self._mark_connected()
            raise MalformedMessage("the snapshot is not text") from None
        self._mark_connected()
        if raw is None:
            raise NoSnapshot(f"no snapshot in namespace {self._names.namespace!r} yet")
        return raw

    async def bootstrap(self) -> None:
        """Load the snapshot; raises RedisError/OSError, NoSnapshot or ProtocolError."""
        raw = await self._get_snapshot()
        text = _snapshot_text(raw)
        snapshot = self._signed.open_snapshot(text)
        self._signed.load(text, snapshot)
        self._seen_snapshot = raw
        self._cursor = _position(snapshot.seq)

    def resume_from_memory(self) -> None:
        """Follow on from a state loaded elsewhere (the cache file): reconcile on first contact."""
        self._cursor = _position(self._signed.keys.state.seq)
        self._seen_snapshot = None

    async def run(self) -> None:
        """Follow forever (until cancelled); never raises for Redis, protocol or other trouble."""
        delay = BACKOFF_FIRST
        reconcile = not self.connected
        while True:
            _reraise_cancellation()
            try:
                if reconcile:
                    await self._reconcile()
                    reconcile = False
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
                reconcile = True
            except (RedisError, OSError) as exc:
                _reraise_cancellation()
                if self.connected:
                    log.warning("lost Redis (%s); validating from memory, reconnecting", type(exc).__name__)
                    self.disconnects += 1
                self.connected = False
                self.last_error = type(exc).__name__
                reconcile = True
            except Exception as exc:
                _reraise_cancellation()
                # Never the message: it may quote what Redis held. The type is enough to look.
                log.error("following hit an unexpected %s; validating from memory, retrying", type(exc).__name__)
                self.failures += 1
                self.last_error = type(exc).__name__
                reconcile = True
            else:
                continue
            await asyncio.sleep(random.uniform(delay / 2, delay))  # noqa: S311 - jitter only
            delay = min(delay * 2, BACKOFF_CAP)

    async def _read_once(self) -> None:
        start, block, waiting = self._cursor, self._block_ms, self._wait_from is not None
        if self._wait_from is not None:
            start, block, self._wait_from = self._wait_from, min(JUNK_WAIT_MS, self._block_ms), None
        response: Any = await self._xread(f"{start[0]}-{start[1]}", block)
        self._mark_connected()
        if not response:
            if not waiting or time.monotonic() - self._reconciled_at >= self._block_ms / 1000:
                await self._reconcile()
            return
        entries = _entries(response)
        fresh, last, skipped, signed = False, start, self._skipped, self._signed
        for raw_id, fields in entries:
            entry_id = _entry_id(raw_id)
            if entry_id is None:  # not an id Redis gives; nothing to place or skip
                continue
            if entry_id > last:
                last = entry_id
            value = _event_value(fields)
            if skipped and (entry_id, _digest(value)) in skipped:
                if entry_id[0] <= signed.keys.state.seq and entry_id > self._cursor:
                    self._cursor, fresh = entry_id, True  # a resync brought it within the slot
                continue
            fresh = True
            outcome, seq = signed.offer_seq(_text(value))
            if outcome is Outcome.GAP:
                log.info("gap in seq after %d: resyncing from the snapshot", signed.keys.state.seq)
                await self._reconcile(gap=True)
                if seq is not None and signed.keys.state.seq < seq:
                    self._skip((entry_id, _digest(value)))  # the snapshot lacks it: no resync on it again
                return
            applied = signed.keys.state.seq
            if outcome is Outcome.APPLIED and (applied, 0) > self._cursor:
                self._cursor = _position(applied)
            if entry_id[0] <= applied:
                if entry_id > self._cursor:
                    self._cursor = entry_id
            else:
                self._skip((entry_id, _digest(value)))
        if not fresh:
            self._wait_from = last
        if self._signed.pending_events >= BATCH:
            await self._reconcile()

    async def _xread(self, start: str, block: int) -> Any:
        if self._own_connection:
            return await self._command("XREAD", "COUNT", BATCH, "BLOCK", block, "STREAMS", self._stream, start)
        return await self._redis.xread({self._stream: start}, count=BATCH, block=block)

    async def _command(self, *args: Any) -> Any:
        """One command on the follower's own connection, reply as the server sent it.

        Only for a client the agent built (``own_connection``): it skips the client's
        per-command machinery (pool checkout, retry wrapper, reply callbacks, metrics), so
        each event reaches the agent about 10 µs sooner, and the agent holds one connection,
        not one per kind of command. The follower's commands run one at a time, from its
        own task (bootstrap before the loop starts). A client the service passed in is used
        through its methods, whatever it wraps.
        """
        pool = self._redis.connection_pool
        conn = self._conn
        if conn is None:
            conn = self._conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.send_command(*args)
            return await conn.read_response()
        except ResponseError:
            raise  # an error reply, read whole: the connection is fine
        except BaseException:
            # A reply half read (cancelled, timed out, cut) would poison the next command.
            self._conn = None
            with contextlib.suppress(Exception):
                await conn.disconnect()
            await pool.release(conn)
            raise

    async def close(self) -> None:
        """Give the follower's connection back (the loop must be stopped first)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._redis.connection_pool.release(conn)

    def _skip(self, mark: tuple[EntryId, bytes]) -> None:
        self._skipped[mark] = None
        if len(self._skipped) > SKIPPED_SIZE:
            del self._skipped[next(iter(self._skipped))]

    async def _reconcile(self, *, gap: bool = False) -> None:
        """Compare the snapshot with the state (SignedState.adopt): resync to a newer one,
        reset to a later log, compact when level, refuse a replay."""
        self._reconciled_at = time.monotonic()
        try:
            raw = await self._get_snapshot()
        except NoSnapshot:
            return
        except MalformedMessage as exc:
            self._refuse_snapshot(_UNREADABLE, exc.code)
            return
        if raw == self._refused_snapshot or (
            raw == self._seen_snapshot and not gap and not self._signed.pending_events
        ):
            return
        try:
            text = _snapshot_text(raw)
            snapshot = self._signed.open_snapshot(text)
        except ProtocolError as exc:
            self._refuse_snapshot(raw, exc.code)
            return
        self._seen_snapshot = raw
        adoption = self._signed.adopt(text, snapshot, gap=gap)
        position = _entry_id(snapshot.position) or _position(snapshot.seq)
        if adoption is Adoption.RESYNC:
            self._cursor = max(self._cursor, position)
        elif adoption is Adoption.RESET:
            self._cursor = position
        elif adoption is Adoption.REFUSED:
            self._refused_snapshot = raw

    def _refuse_snapshot(self, raw: object, code: str) -> None:
        if raw != self._refused_snapshot:
            self._signed.refused[f"snapshot_{code}"] += 1
            log.warning("refused the snapshot in Redis (%s)", code)
        self._refused_snapshot = raw

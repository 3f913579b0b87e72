"""Following the issuer's log on Redis: bootstrap from the snapshot, tail with XREAD, heal.

Redis is an untrusted transport and an unreliable one. Everything read goes through
:class:`SignedState` (opened with the trust anchor before it is folded). A gap in seq, or
a position trimmed away, resyncs from the snapshot. A lost connection is retried with
capped, jittered exponential backoff while ``verify`` keeps serving from memory.

redis-py's defaults fight a long blocking read: the default socket timeout (5 s) kills an
XREAD BLOCK longer than it, and the default retries replay a command on a dead connection
for a while before telling us. :func:`connect` builds a client whose socket timeout
exceeds the block time and which never retries by itself: this loop owns the retries.

When the idle wait ends with nothing read, and after every reconnect, the follower compares
the snapshot with its state. A snapshot *behind* the state means the log restarted (an empty
Redis where the issuer began again with the same control key, or a restored backup): the
agent adopts it only because its signature verifies, and keeps every revocation it knew
(see :meth:`SignedState.reset`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from keyherald.shared.errors import ProtocolError
from keyherald.shared.events import Snapshot
from keyherald.shared.names import EVENT_FIELD, Names, stream_id
from keyherald.shared.state import Outcome, State

from .signedstate import SignedState

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


class NoSnapshot(Exception):
    """The namespace holds no snapshot yet: the issuer has not started (or Redis is empty)."""


def connect(url: str, *, block_ms: int | None = None) -> Redis:
    """A client fit for blocking reads: socket timeout above the block time, no hidden retries.

    A connection that dies silently (no RST: a partition, a dead NAT entry) is then noticed
    within block + SOCKET_MARGIN seconds, and the follower's own backoff takes over.
    """
    block = BLOCK_MS if block_ms is None else block_ms
    return Redis.from_url(
        url,
        decode_responses=True,
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


def _other_log(snapshot: Snapshot, state: State) -> bool:
    """At the same seq, the same log has the same time and keys (revocations may differ
    after a reset, which keeps old ones)."""
    return snapshot.time != state.time or {k.kid for k in snapshot.keys} != set(state.keys)


def _entry_id(text: str) -> tuple[int, int]:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _text(value: object) -> object:
    if isinstance(value, bytes):
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            return None
    return value


class Follower:
    """One task per agent: reads the stream and feeds the SignedState."""

    def __init__(self, redis: Redis, names: Names, signed: SignedState, *, block_ms: int | None = None) -> None:
        self._redis = redis
        self._names = names
        self._signed = signed
        self._block_ms = BLOCK_MS if block_ms is None else block_ms
        self._cursor = (0, 0)
        self._seen_snapshot: str | None = None
        self.connected = False
        self.disconnects = 0
        self.last_error: str | None = None

    @property
    def cursor(self) -> str:
        return f"{self._cursor[0]}-{self._cursor[1]}"

    def _mark_connected(self) -> None:
        if not self.connected and self.last_error is not None:
            log.info("Redis is back; following from seq %d", self._signed.keys.state.seq)
        self.connected = True
        self.last_error = None

    async def fetch_snapshot(self) -> str:
        raw = _text(await self._redis.get(self._names.snapshot))
        self._mark_connected()
        if raw is None:
            raise NoSnapshot(f"no snapshot in namespace {self._names.namespace!r} yet")
        if not isinstance(raw, str):
            raise NoSnapshot("the snapshot is not text")
        return raw

    async def bootstrap(self) -> None:
        """Load the snapshot; raises RedisError/OSError, NoSnapshot or ProtocolError."""
        raw = await self.fetch_snapshot()
        snapshot = self._signed.open_snapshot(raw)
        self._signed.load(raw, snapshot)
        self._seen_snapshot = raw
        self._cursor = _entry_id(stream_id(snapshot.seq) if snapshot.seq else "0-0")

    def resume_from_memory(self) -> None:
        """Follow on from a state loaded elsewhere (the cache file): reconcile on first contact."""
        self._cursor = _entry_id(stream_id(self._signed.keys.state.seq) if self._signed.keys.state.seq else "0-0")
        self._seen_snapshot = None

    async def run(self) -> None:
        """Follow forever (until cancelled); never raises for Redis or protocol trouble."""
        delay = BACKOFF_FIRST
        reconcile = not self.connected
        while True:
            _reraise_cancellation()
            try:
                if reconcile:
                    await self._reconcile()
                    reconcile = False
                await self._read_once()
                delay = BACKOFF_FIRST
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                _reraise_cancellation()
                if self.connected:
                    log.warning("lost Redis (%s); validating from memory, reconnecting", type(exc).__name__)
                    self.disconnects += 1
                self.connected = False
                self.last_error = type(exc).__name__
                reconcile = True
                await asyncio.sleep(random.uniform(delay / 2, delay))  # noqa: S311 - jitter only
                delay = min(delay * 2, BACKOFF_CAP)

    async def _read_once(self) -> None:
        response: Any = await self._redis.xread(
            {self._names.events: self.cursor}, count=BATCH, block=self._block_ms
        )
        self._mark_connected()
        if not response:
            await self._reconcile()
            return
        entries: list[tuple[Any, Any]] = [e for _stream, batch in response for e in batch]
        for entry_id, fields in entries:
            self._cursor = max(self._cursor, _entry_id(str(_text(entry_id))))
            text = _text(fields.get(EVENT_FIELD)) if isinstance(fields, dict) else None
            if self._signed.offer(text) is Outcome.GAP:
                log.info("gap in seq after %d: resyncing from the snapshot", self._signed.keys.state.seq)
                await self._reconcile(gap=True)
                return
        if self._signed.pending_events >= BATCH:
            await self._reconcile()

    async def _reconcile(self, *, gap: bool = False) -> None:
        """Compare the snapshot with the state: adopt a newer one, reset to an older one
        (a restarted log), compact the kept events when equal."""
        try:
            raw = await self.fetch_snapshot()
        except NoSnapshot:
            return
        if raw == self._seen_snapshot and not gap and not self._signed.pending_events:
            return
        try:
            snapshot = self._signed.open_snapshot(raw)
        except ProtocolError as exc:
            if raw != self._seen_snapshot:
                self._signed.refused[f"snapshot_{exc.code}"] += 1
                log.warning("refused the snapshot in Redis (%s)", exc.code)
            self._seen_snapshot = raw
            return
        self._seen_snapshot = raw
        current = self._signed.keys.state.seq
        position = _entry_id(snapshot.position)
        if snapshot.seq > current or (gap and snapshot.seq == current):
            self._signed.load(raw, snapshot, resync=True)
            self._cursor = max(self._cursor, position)
        elif snapshot.seq < current or _other_log(snapshot, self._signed.keys.state):
            # Behind us, or level with us but different: another log than the one we followed.
            self._signed.reset(raw, snapshot)
            self._cursor = position
        else:
            self._signed.compact(raw)

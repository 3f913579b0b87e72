"""Checkpoints: the state written out now and then, so readers start from it and the stream
can be trimmed; and the leader's audit of what Redis holds beside its own appends.

An append does not rewrite the checkpoint (its cost would grow with every live revocation):
the leader writes one after CHECKPOINT_EVENTS events, or CHECKPOINT_AGE seconds after the
last when anything came since. Each write is a compare-and-set on the SHA-1 of the checkpoint
the writer last saw, so a paused writer cannot put back an older one.

The audit runs on every duty tick and costs a few small reads: the checkpoint's length
(and every AUDIT_SUM_EVERY seconds its SHA-1, computed by Redis), and the newest entries of
the stream against the digests of what this writer appended or read. A checkpoint that is
not ours is written again; a stream whose tail is not ours (a spliced or deleted event) is
reported, and the writer starts a new log.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from keyherald.shared.chain import digest
from keyherald.shared.clock import Clock
from keyherald.shared.envelope import MAX_SNAPSHOT_LENGTH, ControlKey
from keyherald.shared.names import EVENT_FIELD, Names
from keyherald.shared.state import State

from . import scripts
from .checkpointseal import seal_checkpoint
from .errors import SnapshotTooLarge
from .logreader import raw

__all__ = ["AUDIT_SUM_EVERY", "CHECKPOINT_AGE", "CHECKPOINT_EVENTS", "Checkpoints", "Digests"]

CHECKPOINT_EVENTS = 1024
"""A checkpoint is due after this many events..."""
CHECKPOINT_AGE = 300.0
"""... or this many seconds after the last one, when any event came since."""
AUDIT_SUM_EVERY = 30.0
"""Seconds between full checks of the checkpoint's bytes (its length is checked every tick)."""
AUDIT_TAIL = 16
"""Newest stream entries compared with this writer's digests on each audit."""
_SUM = "local v = redis.pcall('GET', KEYS[1]) if type(v) ~= 'string' then return '' end return redis.sha1hex(v)"


def sha1(text: str) -> str:
    """The CAS token of a checkpoint: Redis can compute it too (``redis.sha1hex``)."""
    return hashlib.sha1(text.encode("ascii"), usedforsecurity=False).hexdigest()


class Digests:
    """seq -> digest of the events this writer appended or read lately, on its current log,
    and which of them it appended itself (the leader witnesses everyone else's)."""

    def __init__(self, size: int = 2048) -> None:
        self._size = size
        self._log = ""
        self._by_seq: OrderedDict[int, str] = OrderedDict()
        self._mine: OrderedDict[tuple[str, int], None] = OrderedDict()

    def note(self, log_id: str, seq: int, value: str, *, mine: bool = False) -> None:
        if log_id != self._log:
            self._log, self._by_seq = log_id, OrderedDict()
        self._by_seq[seq] = value
        if len(self._by_seq) > self._size:
            self._by_seq.popitem(last=False)
        if mine:
            self._mine[(log_id, seq)] = None
            if len(self._mine) > self._size:
                self._mine.popitem(last=False)

    def mine(self, log_id: str, seq: int) -> bool:
        return (log_id, seq) in self._mine

    def get(self, log_id: str, seq: int) -> str | None:
        return self._by_seq.get(seq) if log_id == self._log else None


class Checkpoints:
    def __init__(self, redis: Redis, names: Names, control: ControlKey, clock: Clock) -> None:
        self._redis = redis
        self._names = names
        self.control = control
        self._clock = clock
        self._write = redis.register_script(scripts.CHECKPOINT)
        self._sum_script = redis.register_script(_SUM)
        self.seq = 0
        self.time = 0.0
        self.sum: str | None = None
        """SHA-1 of the checkpoint this writer last wrote or saw (None: unknown, read it)."""
        self.length: int | None = None
        self.base = False
        """The checkpoint is a log's base: replaced as soon as the log has events (a reader
        then starts with the policy and keys, and the freshness they set)."""
        self._summed_at = float("-inf")

    def known(self, seq: int, at: float, text: str | None, *, base: bool = False, sum: str | None = None) -> None:
        """The checkpoint Redis holds now, as this writer read or wrote it (``sum``: its SHA-1,
        when already taken off the loop)."""
        self.seq, self.time, self.base = seq, at, base
        self.sum = sum if sum is not None else (sha1(text) if text is not None else None)
        self.length = len(text) if text is not None else None
        self._summed_at = time.monotonic()

    def due(self, state: State, now: float) -> bool:
        if state.seq <= self.seq:
            return False
        return self.base or state.seq - self.seq >= CHECKPOINT_EVENTS or now - self.time >= CHECKPOINT_AGE

    async def write(self, state: State, *, force: bool = False) -> bool:
        """Write ``state`` as the checkpoint when due (or ``force``); True if written."""
        now = self._clock()
        if not force and not self.due(state, now):
            return False
        # Sorting, serializing and signing a million revocations takes seconds: done on a
        # thread, in small steps, from a copy (the state goes on moving on the loop).
        frozen = state.copy()
        sealed = await asyncio.to_thread(seal_checkpoint, self.control, frozen)
        text = sealed.text
        if len(text) > MAX_SNAPSHOT_LENGTH:
            raise SnapshotTooLarge(
                f"the checkpoint would be {len(text)} bytes, over {MAX_SNAPSHOT_LENGTH}: too many live"
                " revocations; revoke subjects rather than single tokens"
            )
        for _ in range(3):
            if self.sum is None:
                self.sum = str(await self._sum_script(keys=[self._names.snapshot]))
            result = int(await self._write(
                keys=[self._names.head, self._names.snapshot], args=[frozen.log, frozen.seq, self.sum, text],
            ))
            if result == 1:
                self.known(frozen.seq, now, text, sum=sealed.sha1)
                return True
            if result == 0:  # the head is on another log, or behind: not ours to write
                return False
            self.sum = None
        return False

    async def audit(self, state: State) -> str | None:
        """Is the checkpoint in Redis the one we wrote or saw? Repairs it if not; says what it found."""
        try:
            length = int(await self._redis.strlen(self._names.snapshot))
        except ResponseError:
            length = -1
        problem = None
        if self.length is not None and length != self.length:
            problem = "the checkpoint in Redis is not the one written"
        elif self.sum is not None and time.monotonic() - self._summed_at >= AUDIT_SUM_EVERY:
            self._summed_at = time.monotonic()
            if str(await self._sum_script(keys=[self._names.snapshot])) != self.sum:
                problem = "the checkpoint in Redis is not the one written"
        if problem is not None:
            self.sum = None
            await self.write(state, force=True)
        return problem


async def audit_stream(redis: Redis, names: Names, state: State, digests: Digests) -> str | None:
    """Do the stream's newest entries hold the events this writer knows at their seqs?"""
    try:
        newest: Any = await raw(redis, "XREVRANGE", names.events, "+", "-", "COUNT", AUDIT_TAIL)
    except ResponseError:
        return "the event stream is not a stream"
    top = 0
    for raw_id, fields in newest or []:
        ms, _, part = (raw_id.decode("ascii", "replace") if isinstance(raw_id, bytes) else str(raw_id)).partition("-")
        if not (ms.isdigit() and part == "0"):
            continue  # junk within a slot: readers skip it
        seq = int(ms)
        if seq > state.seq:
            continue  # above our head: another writer's append we have not read yet, or junk
        top = max(top, seq)
        expected = digests.get(state.log, seq)
        text = _field(fields)
        if expected is not None and (text is None or digest(text) != expected):
            return f"the event at seq {seq} in the stream is not the one appended"
    if state.seq and top < state.seq and digests.get(state.log, state.seq) is not None:
        return f"the stream lacks the events up to seq {state.seq}"
    return None


def _field(fields: Any) -> str | None:
    value = None
    if isinstance(fields, list):
        for i in range(0, len(fields) - 1, 2):
            if fields[i] in (EVENT_FIELD, EVENT_FIELD.encode()):
                value = fields[i + 1]
    elif isinstance(fields, dict):
        value = fields.get(EVENT_FIELD.encode(), fields.get(EVENT_FIELD))
    if isinstance(value, bytes):
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) else None

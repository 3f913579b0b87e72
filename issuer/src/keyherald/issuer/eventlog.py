"""The writer's side of the log: a verified state in memory, appends that extend it, repairs.

Every writer (each replica, and the ``keyherald`` command) holds the state it verified, and
moves it forward only along the chain: its own appends, and events other writers appended,
read from the stream. An append is a compare-and-set on the head key (one Lua script writes
the events at stream ids ``<seq>-0``), so seq never skips nor repeats and the log never
forks while Redis behaves. Appends do not rewrite the checkpoint (:mod:`.checkpoints`), so
an append costs the same whatever the state holds.

When Redis does not behave (it went back, was wiped, holds junk or a fork), :mod:`.recovery`
decides, and a writer holding the state starts a new log from what it knows; the writers'
local records (:mod:`.memory`) keep a restarted one from building on an older log.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from keyherald.shared.chain import digest, new_log_id
from keyherald.shared.clock import Clock, system_clock
from keyherald.shared.envelope import ControlKey
from keyherald.shared.events import Event, EventType, LogLink
from keyherald.shared.lineage import freshness_bound
from keyherald.shared.names import Names, stream_id
from keyherald.shared.state import State

from . import scripts
from .checkpoints import CHECKPOINT_AGE, CHECKPOINT_EVENTS, Checkpoints, Digests, audit_stream
from .drafts import Change, Draft, Mutation, RetryAppend
from .errors import AppendContention, CorruptState, LogRefused, NamespaceOwnedElsewhere
from .highwater import HighWater, RecordFile
from .logreader import Observed, format_head, parse_head, raw, read_log, read_tail
from .memory import MAX_REASSERT, WriterMemory
from .recovery import Action, decide

__all__ = [
    "CHECKPOINT_AGE",
    "CHECKPOINT_EVENTS",
    "Change",
    "Draft",
    "EventLog",
    "Mutation",
    "RetryAppend",
]

log = logging.getLogger("keyherald.issuer")


def _raw_text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return "" if value is None else str(value)


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
        record: RecordFile | None = None,
        allow_stale: bool = False,
        heartbeat_interval: float = 5.0,
    ) -> None:
        self._redis = redis
        self._names = names
        self._control = control
        self._anchor = control.anchor
        self._issuer = issuer
        self._retain = retain
        self._clock = clock
        self._allow_stale = allow_stale
        self._heartbeat = heartbeat_interval
        self._append = redis.register_script(scripts.APPEND)
        self._start = redis.register_script(scripts.START_LOG)
        self._repair = redis.register_script(scripts.REPAIR_HEAD)
        self._state: State | None = None
        self.memory = WriterMemory(record, clock)
        self.checkpoints = Checkpoints(redis, names, control, clock)
        self._digests = Digests()
        self._genesis_head = ""
        self._genesis_pending = False
        """An empty namespace's first log is decided (``_state``) but not written yet."""
        self.problem: str | None = None
        """Why the last sync refused the log, for /healthz; None while all is well."""
        self.recoveries = 0
        self._mine: OrderedDict[tuple[str, int], None] = OrderedDict()
        """Events this writer appended lately: the leader witnesses everyone else's."""
        self.on_append: list[Callable[[Sequence[Event], float], None]] = []
        """Called after each append this writer made, with its events and how long it took
        (the replica's metrics); must be quick and not raise."""
        self.unread: list[tuple[str, int]] = []
        """Events Redis said were appended (the head named them) but that were gone before
        this writer could read them: if one was a revocation, it is lost. Kept for /healthz."""

    @property
    def names(self) -> Names:
        return self._names

    @property
    def state(self) -> State | None:
        """The verified state in memory (None before the first sync); never mutate it."""
        return self._state

    @property
    def record(self) -> HighWater | None:
        return self.memory.record

    @property
    def empty(self) -> bool:
        """The namespace holds no log yet (its first is decided, not written)."""
        return self._genesis_pending

    @property
    def lost(self) -> State | None:
        return self.memory.lost

    @property
    def revoked_kids(self) -> dict[str, int]:
        return self.memory.revoked_kids(self._state)

    # -- reading ------------------------------------------------------------------------

    async def read_state(self) -> State:
        """A copy of the current verified state (it costs one copy of the state: hot paths
        use :meth:`sync`)."""
        return (await self.sync()).copy()

    async def sync(self) -> State:
        """Catch up with Redis: follow the chain, or judge what Redis holds (and repair it).
        Returns the live state: do not change it; it moves on as the log does."""
        state = self._state
        if state is not None:
            try:
                head = _raw_text(await raw(self._redis, "GET", self._names.head))
            except ResponseError:  # the head made another type of key: junk, replaced below
                head = scripts.WRONG_TYPE
            if head == format_head(state):
                return state
            claim = parse_head(head)
            if claim is not None and claim.log == state.log and claim.seq > state.seq:
                await read_tail(self._redis, self._names, self._anchor, state, self._issuer, seen=self._note)
                if format_head(state) == head:
                    self.memory.progress(state)
                    return state
        for _ in range(8):
            observed = await read_log(self._redis, self._names, self._anchor, self._issuer)
            if await self._settle(observed):
                assert self._state is not None
                return self._state
        raise AppendContention("the log kept changing while this writer read it")

    async def _lease_held(self) -> bool:
        """Does a replica lead (a lease with a TTL)? Asked only when a stale log is judged."""
        try:
            return int(await self._redis.pttl(self._names.leader)) > 0
        except ResponseError:
            return True  # not a lease we can read: assume someone may be running

    def _note(self, event: Event, text: str) -> None:
        self._digests.note(event.log, event.seq, digest(text))

    def _noted_mine(self, events: Sequence[Event]) -> None:
        for event in events:
            self._mine[(event.log, event.seq)] = None
        while len(self._mine) > 1024:
            self._mine.popitem(last=False)

    def appended_here(self, event: Event) -> bool:
        """Did this writer append ``event`` (rather than another replica, or the command)?"""
        return (event.log, event.seq) in self._mine

    async def _settle(self, observed: Observed) -> bool:
        """Act on what Redis holds; False when it changed meanwhile (read again)."""
        seen = observed.state
        if seen is not None and seen.issuer != self._issuer:
            raise NamespaceOwnedElsewhere(
                f"namespace {self._names.namespace!r} belongs to issuer {seen.issuer!r}, "
                f"not {self._issuer!r} (set KEYHERALD_ISSUER or KEYHERALD_NAMESPACE)"
            )
        memory = self.memory
        record = memory.record
        ours = self._state if self._state is not None and not self._genesis_pending else None
        self._note_unread(observed, ours)
        heartbeat = seen.heartbeat_interval if seen is not None else self._heartbeat
        lease_held = True if ours is not None else await self._lease_held()
        decision = decide(
            observed, ours=ours, record=record, now=self._clock(), freshness=freshness_bound(heartbeat),
            allow_stale=self._allow_stale, left=tuple(memory.left), lease_held=lease_held,
        )
        action = decision.action
        if action is Action.REFUSE:
            self.problem = decision.reason
            raise LogRefused(
                f"{decision.reason}; nothing was appended (`keyherald log status` shows both;"
                " `keyherald log accept` builds on it, once you know it is the log to keep)"
            )
        self.problem = None
        if action is Action.GENESIS:
            # An empty namespace. If this host's record knows a log that was here, Redis lost
            # its data: the new log names that point and is numbered on from it.
            start = record.seq if record is not None else 0
            self._state = State.empty(self._issuer, new_log_id(), seq=start)
            if record is not None:
                self._state.previous = LogLink(log=record.log, seq=record.seq, head=record.head, time=record.time)
                self._state.time = record.time
                memory.leave(record.log)
            self._genesis_head, self._genesis_pending = observed.head or "", True
            return True
        self._genesis_pending = False  # someone else's log is there now
        if action is Action.RECOVER:
            assert ours is not None
            return await self._recover(ours, observed, decision.reason)
        assert seen is not None
        if action is Action.ADOPT:
            assert ours is not None
            log.warning("adopting log %s: %s", seen.log[:8], decision.reason)
            memory.lost = ours
            memory.leave(ours.log)
        elif ours is not None and ours.position != seen.position:
            # Further on our log, past a checkpoint we could not chain to: what we knew and it
            # lacks (a fork we cannot see) is appended again, never silently dropped.
            memory.lost = ours
        self._state = seen
        self.checkpoints.known(observed.checkpoint_seq, observed.checkpoint_time, observed.checkpoint_text,
                               base=observed.checkpoint_base)
        if observed.problem is not None and observed.head_only:
            return await self._repair_head(seen, observed, observed.problem)
        if observed.problem is not None:  # a memoryless writer followed it: now repair as one that knows
            return await self._recover(seen, observed, observed.problem)
        memory.progress(seen, force=True)
        return True

    async def _repair_head(self, state: State, observed: Observed, reason: str) -> bool:
        """Only the head key is wrong: write it again (no new log, nothing for readers to fetch)."""
        result = int(await self._repair(keys=[self._names.events, self._names.head],
                                        args=[observed.head or "", format_head(state)]))
        if result != 1:
            return False
        log.warning("wrote the head key again: %s", reason)
        self.memory.progress(state, force=True)
        return True

    def _note_unread(self, observed: Observed, ours: State | None) -> None:
        """The head names an event of the log Redis holds that the stream no longer has, and
        this writer never read: someone removed it (or Redis lost it) before anyone held it."""
        claim, seen = observed.claim, observed.state
        if claim is None or seen is None or claim.log != seen.log or claim.seq <= seen.seq:
            return
        if ours is not None and ours.log == claim.log and ours.seq >= claim.seq:
            return  # we hold it: the new log we start carries it
        point = (claim.log, claim.seq)
        if point in self.unread:
            return
        self.unread = [*self.unread, point][-16:]
        log.error(
            "events up to seq %d of log %s were appended but removed from Redis before this writer read"
            " them: a revocation among them is lost; run it again (and look at who writes Redis)",
            claim.seq, claim.log[:8],
        )

    async def reassert(self) -> list[Event]:
        """Append again what a log we left knew and the current one lacks; then forget it."""
        if self.memory.lost is None:
            return []

        async def mutation(state: State, now: float) -> Sequence[Draft]:
            return self.memory.lost_drafts(state)[:MAX_REASSERT]

        events = await self.commit(mutation)
        if not self.memory.lost_drafts(self._state):
            self.memory.lost = None
        return events

    async def audit(self) -> str | None:
        """The leader's look at what Redis holds beside its appends: a checkpoint that is not
        ours is written again; a stream tail that is not ours starts a new log. Says what it found."""
        state = await self.sync()
        problem = await audit_stream(self._redis, self._names, state, self._digests)
        if problem is not None:
            observed = await read_log(self._redis, self._names, self._anchor, self._issuer)
            await self._recover(state, observed, problem)
            return problem
        return await self.checkpoints.audit(state)

    # -- appending ----------------------------------------------------------------------

    async def commit(self, mutation: Mutation, *, attempts: int = 64) -> list[Event]:
        """Append what ``mutation`` decides; retried on a fresh state when another writer won."""
        for attempt in range(attempts):
            state = await self.sync()
            if self._genesis_pending:
                await self._start_log(state, previous=state.previous, reason="genesis", expected=self._genesis_head,
                                      after=state.seq)
                continue
            base_head, base_seq = format_head(state), state.seq
            now = max(self._clock(), state.time)  # log time never goes backwards
            try:
                change = await mutation(state, now)
            except RetryAppend:
                continue
            if not isinstance(change, Change):
                change = Change(list(change))
            if self._state is not state or state.seq != base_seq or format_head(state) != base_head:
                continue  # the state moved while the mutation decided
            if not change.drafts:
                return []
            events, texts = self._seal(state, change.drafts, now)
            new_head = f"{state.log}:{events[-1].seq}:{digest(texts[-1])}"
            minid = max(0, min(self.checkpoints.seq + 1, events[-1].seq + 1 - self._retain))
            client_args = [x for cid, rec in change.clients.items() for x in (cid, rec or "")]
            started = time.perf_counter()
            try:
                result = int(await self._append(
                    keys=[self._names.events, self._names.head, self._names.clients],
                    args=[base_head, new_head, f"{minid}-0", base_seq + 1, len(texts), *texts, *client_args],
                ))
            except ResponseError as exc:
                raise CorruptState(f"Redis refused an append: {exc}") from None
            if result == 1:
                self._noted_mine(events)
                for event, text in zip(events, texts, strict=True):
                    state.apply(event, digest(text))
                    self._note(event, text)
                self.memory.progress(state)
                took = time.perf_counter() - started
                for listener in self.on_append:
                    listener(events, took)
                return events
            if result == -2:
                # The stream holds what we did not write: start afresh from what we know.
                observed = await read_log(self._redis, self._names, self._anchor, self._issuer)
                await self._recover(state, observed, "the event stream refused an append (junk in it)")
                continue
            await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))  # noqa: S311
        raise AppendContention(f"gave up appending after {attempts} contended attempts")

    def _seal(self, state: State, drafts: Sequence[Draft], now: float) -> tuple[list[Event], list[str]]:
        events: list[Event] = []
        texts: list[str] = []
        prev = state.head
        for i, (kind, data) in enumerate(drafts, start=1):
            event = Event(log=state.log, seq=state.seq + i, prev=prev, type=kind, time=now,
                          issuer=self._issuer, data=data)
            text = self._control.seal_event(event)
            events.append(event)
            texts.append(text)
            prev = digest(text)
        return events, texts

    # -- checkpoints ----------------------------------------------------------------------

    def checkpoint_due(self, now: float) -> bool:
        return self._state is not None and self.checkpoints.due(self._state, now)

    async def checkpoint(self, *, force: bool = False) -> bool:
        """Write the state in memory as the checkpoint, when due (or ``force``); True if written."""
        return await self.checkpoints.write(await self.sync(), force=force)

    # -- new logs -------------------------------------------------------------------------

    async def _recover(self, ours: State, observed: Observed, reason: str) -> bool:
        """Start a new log from ``ours`` plus whatever verified in Redis."""
        base = ours.copy()
        seen = observed.state
        if seen is not None and seen.issuer == self._issuer:
            base.absorb(seen)
            base.merge_clients(seen)
        at = max(self._clock(), ours.time + 0.001, (seen.time + 0.001) if seen is not None else 0.0)
        previous = LogLink(log=ours.log, seq=ours.seq, head=ours.head, time=ours.time) if ours.seq else None
        log.warning("starting a new log: %s (the previous one, %s, is kept by every reader)", reason, ours.position)
        after = max(ours.seq, seen.seq if seen is not None else 0)
        started = await self._start_log(base, previous=previous, reason="recovery", expected=observed.head or "",
                                        at=at, after=after)
        if started:
            self.recoveries += 1
        return started

    async def start_new_log(self, base: State, *, reason: str, previous: LogLink | None) -> State:
        """Replace whatever Redis holds with a new log whose first state is ``base`` (an
        operator accepting an older log, a restore). Returns the new state."""
        observed = await read_log(self._redis, self._names, self._anchor, self._issuer)
        after = max(base.seq, previous.seq if previous else 0, observed.state.seq if observed.state else 0)
        if not await self._start_log(base, previous=previous, reason=reason, expected=observed.head or "",
                                     after=after):
            raise AppendContention("the log changed while a new one was being started; try again")
        assert self._state is not None
        return self._state

    async def _start_log(
        self, base: State, *, previous: LogLink | None, reason: str, expected: str, at: float | None = None,
        after: int = 0,
    ) -> bool:
        """Write a new log: ``base`` as its checkpoint at seq ``after``, then its first event,
        ``log.started``, at ``after + 1`` (past every seq readers may hold, so that readers
        blocked on the stream wake up at it)."""
        log_id = base.log if self._genesis_pending and base is self._state else new_log_id()
        now = max(self._clock(), base.time) if at is None else at
        state = base.copy()
        state.log, state.seq, state.time = log_id, after, now
        state.head = State.empty(self._issuer, log_id).head
        state.log_started, state.previous = now, previous
        checkpoint = self._control.seal_snapshot(state.to_snapshot())
        data = {"previous": previous.model_dump(mode="json") if previous else None, "reason": reason}
        events, texts = self._seal(state, [(str(EventType.LOG_STARTED), data)], now)
        new_head = f"{log_id}:{after + 1}:{digest(texts[0])}"
        result = int(await self._start(
            keys=[self._names.events, self._names.head, self._names.snapshot],
            args=[expected, new_head, checkpoint, stream_id(after + 1), texts[0]],
        ))
        if result != 1:
            return False
        self._noted_mine(events)
        state.apply(events[0], digest(texts[0]))
        self._note(events[0], texts[0])
        self._genesis_pending = False
        old = self._state
        if old is not None and old.log != log_id:
            self.memory.leave(old.log)
        self._state = state
        self.checkpoints.known(after, now, checkpoint, base=True)
        self.memory.progress(state, force=True)
        return True

    def write_record(self) -> None:
        if not self._genesis_pending:
            self.memory.write(self._state)

"""Reading the log as Redis holds it, verified as far as it goes: checkpoint, then the tail.

Nothing read here is trusted until it verifies: the checkpoint opens with the control key,
each event of the tail must extend the chain, and the head key (the append guard, which
anyone who can write Redis can set) only says how far the log claims to go. The result is an
:class:`Observed`: the verified state, and what did not fit, for :mod:`.recovery` to judge.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.client import NEVER_DECODE
from redis.exceptions import ResponseError

from keyherald.shared.anchorchain import follow
from keyherald.shared.anchorchain import open_snapshot as open_chained
from keyherald.shared.chain import digest, genesis_head
from keyherald.shared.envelope import MAX_SNAPSHOT_LENGTH, TrustAnchor
from keyherald.shared.errors import ProtocolError
from keyherald.shared.events import Event
from keyherald.shared.names import EVENT_FIELD, Names, stream_id
from keyherald.shared.state import Outcome, State

from .scripts import WRONG_TYPE

__all__ = [
    "TAIL_BATCH", "HeadClaim", "Observed", "current_anchor", "format_head", "parse_head", "raw", "read_log",
    "read_tail", "text_of",
]

TAIL_BATCH = 1000
_RAW: dict[str, Any] = {NEVER_DECODE: True}
"""Read as bytes whatever the client decodes: junk that is not UTF-8 is refused here, not a
crash in the client's decoder."""


@dataclass(frozen=True)
class HeadClaim:
    """What the head key says: which log, how far, and the digest there."""

    log: str
    seq: int
    head: str


def format_head(state: State) -> str:
    return f"{state.log}:{state.seq}:{state.head}"


def parse_head(raw: object) -> HeadClaim | None:
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
    if not isinstance(text, str):
        return None
    parts = text.split(":")
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return HeadClaim(parts[0], int(parts[1]), parts[2])


@dataclass(frozen=True)
class Observed:
    """What Redis holds. ``state`` is None when no checkpoint verifies."""

    head: str | None
    """The raw head key ('' when absent): the compare-and-set guard of a repair."""
    state: State | None
    checkpoint_seq: int
    checkpoint_time: float
    problem: str | None = None
    """Why Redis is not a whole, consistent log (junk, forgeries, missing events), or None."""
    empty: bool = False
    """Nothing at all: no head, no checkpoint, no stream."""
    checkpoint_text: str | None = None
    """The checkpoint as read (when it verified): what a writer's next checkpoint replaces."""
    checkpoint_base: bool = False
    """The checkpoint is a log's base (before its first event): the leader replaces it soon."""
    head_only: bool = False
    """The checkpoint and the stream form a whole log and only the head key is wrong (junk, or
    another log's): writing the head again repairs it, with no new log for readers to fetch."""

    @property
    def claim(self) -> HeadClaim | None:
        return parse_head(self.head)


async def raw(redis: Redis, *args: Any) -> Any:
    """A command whose reply stays bytes, whatever the client decodes."""
    return await redis.execute_command(*args, **_RAW)  # type: ignore[no-untyped-call]


def text_of(value: object) -> str:
    """A reply as text ('' for none; undecodable bytes replaced): for comparing, not parsing."""
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return "" if value is None else str(value)


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) else None


def _event_text(fields: Any) -> str | None:
    if isinstance(fields, dict):
        value = fields.get(EVENT_FIELD.encode(), fields.get(EVENT_FIELD))
        return _text(value)
    return None


def current_anchor(anchor: TrustAnchor, state: State) -> TrustAnchor:
    """The anchor that opens what follows ``state``: the one it names once an anchor rotation
    moved it from ``anchor`` (reached along the state's rotation chain)."""
    if state.anchor and state.anchor != anchor.thumbprint:
        return follow(anchor, state.anchors, state.anchor)
    return anchor


async def read_tail(
    redis: Redis, names: Names, anchor: TrustAnchor, state: State, issuer: str, *, limit: int | None = None,
    seen: Callable[[Event, str], None] | None = None,
) -> tuple[int, str | None]:
    """Fold into ``state`` the events after it that extend its chain; returns how many were
    applied and, when the stream holds an entry for the next seq that does not extend it,
    why (a splice, another log, a forgery)."""
    applied = 0
    while limit is None or applied < limit:
        try:
            entries: Sequence[Any] = await raw(
                redis, "XRANGE", names.events, stream_id(state.seq + 1), "+", "COUNT", TAIL_BATCH
            )
        except ResponseError:
            return applied, "the event stream is not a stream"
        if not entries:
            return applied, None
        for raw_id, fields in entries:
            place = _place(raw_id)
            if place is None or place < (state.seq + 1, 0):
                continue
            if place != (state.seq + 1, 0):
                if place[0] == state.seq:  # junk within the slot of the event we hold
                    continue
                return applied, f"events are missing after seq {state.seq}"
            text = _event_text(fields)
            if text is None:
                return applied, "an entry in the stream is not an event"
            try:
                anchor = current_anchor(anchor, state)
                event = anchor.open_event(text, issuer=issuer)
            except ProtocolError as exc:
                return applied, f"the entry for seq {state.seq + 1} was refused ({exc.code})"
            try:
                outcome = state.apply(event, digest(text))
            except ValueError:
                return applied, f"event {state.seq + 1} has malformed data"
            except ProtocolError as exc:
                return applied, f"event {state.seq + 1} was refused ({exc.code})"
            if outcome is not Outcome.APPLIED:
                return applied, f"the entry for seq {state.seq + 1} does not extend the log ({outcome.value})"
            if seen is not None:
                seen(event, text)
            applied += 1
        if len(entries) < TAIL_BATCH:
            return applied, None
    return applied, None


def _place(raw_id: object) -> tuple[int, int] | None:
    text = _text(raw_id)
    if text is None:
        return None
    ms, _, seq = text.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return None


async def read_log(redis: Redis, names: Names, anchor: TrustAnchor, issuer: str) -> Observed:
    """Everything Redis holds of the log, verified as far as it goes."""
    raw_head, size, exists = await _probe(redis, names)
    head = _text(raw_head) or ""
    if raw_head is None and size == 0 and not exists:
        return Observed(head="", state=None, checkpoint_seq=0, checkpoint_time=0.0, empty=True)
    if size > MAX_SNAPSHOT_LENGTH:
        return Observed(head=head, state=None, checkpoint_seq=0, checkpoint_time=0.0,
                        problem=f"the checkpoint is {size} bytes, over the limit")
    if size == 0:
        return Observed(head=head, state=None, checkpoint_seq=0, checkpoint_time=0.0,
                        problem="there is no checkpoint")
    text = _text(await raw(redis, "GET", names.snapshot))
    if text is None:
        return Observed(head=head, state=None, checkpoint_seq=0, checkpoint_time=0.0,
                        problem="the checkpoint is not text")
    try:
        snapshot, anchor = open_chained(anchor, text, issuer=None)
    except ProtocolError as exc:
        return Observed(head=head, state=None, checkpoint_seq=0, checkpoint_time=0.0,
                        problem=f"the checkpoint does not verify ({exc.code})")
    state = State.from_snapshot(snapshot)
    if snapshot.issuer != issuer:
        return Observed(head=head, state=state, checkpoint_seq=snapshot.seq, checkpoint_time=snapshot.time,
                        problem=f"the log belongs to issuer {snapshot.issuer!r}")
    _, broken = await read_tail(redis, names, anchor, state, issuer)
    checkpoint_seq, checkpoint_time = snapshot.seq, snapshot.time
    claim = parse_head(head)
    problem = broken
    # Only a head ahead of the verified stream can mean lost events; any other wrong head (none,
    # another log's, behind the stream, or the right seq with a wrong digest) is written again.
    ahead = claim is not None and claim.log == state.log and claim.seq > state.seq
    head_only = broken is None and not ahead  # read only with a problem
    if claim is None:
        problem = problem or "the head key is not a head"
    elif claim.log != state.log:
        problem = problem or "the head key names another log than the checkpoint"
    elif claim.seq > state.seq:
        problem = problem or f"the head claims seq {claim.seq} but the stream verifies only to {state.seq}"
    elif head != format_head(state) and await _head_again(redis, names) == head:
        # Read again: a head behind the tail we just read is most often a writer appending meanwhile.
        problem = problem or f"the head key says seq {claim.seq} but the stream verifies to {state.seq}"
    return Observed(head=head, state=state, checkpoint_seq=checkpoint_seq, checkpoint_time=checkpoint_time,
                    problem=problem, checkpoint_text=text, checkpoint_base=snapshot.head == genesis_head(snapshot.log),
                    head_only=head_only)


async def _head_again(redis: Redis, names: Names) -> str | None:
    try:
        return _text(await raw(redis, "GET", names.head))
    except ResponseError:  # made another type meanwhile: the next look judges it
        return None


async def _probe(redis: Redis, names: Names) -> tuple[Any, int, bool]:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.execute_command("GET", names.head, **_RAW)
        pipe.strlen(names.snapshot)
        pipe.exists(names.events)
        raw_head, size, exists = await pipe.execute(raise_on_error=False)
    if isinstance(raw_head, Exception):
        raw_head = WRONG_TYPE.encode()  # what the scripts read it as: a head to replace
    if isinstance(size, Exception):
        size = 0
    if isinstance(exists, Exception):
        exists = 1
    return raw_head, int(size), bool(exists)

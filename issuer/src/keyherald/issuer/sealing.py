"""Sealing what a writer appends: events chained on a state, and the first checkpoint and
event of a new log, with the control key the log names (it moves with an anchor rotation).
No Redis writes here: :mod:`.eventlog` writes what these return with its compare-and-set
scripts."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from keyherald.shared.chain import digest
from keyherald.shared.envelope import ControlKey
from keyherald.shared.events import Event, EventType, LogLink
from keyherald.shared.state import State

from .drafts import Draft
from .errors import IssuerError

__all__ = ["LogSigner", "NewLog", "seal_events", "seal_new_log"]

log = logging.getLogger("keyherald.issuer")


def seal_events(
    control: ControlKey, issuer: str, state: State, drafts: Sequence[Draft], now: float
) -> tuple[list[Event], list[str]]:
    """The drafts as events after ``state``'s head, each ``prev`` the digest of the one before."""
    events: list[Event] = []
    texts: list[str] = []
    prev = state.head
    for i, (kind, data) in enumerate(drafts, start=1):
        event = Event(log=state.log, seq=state.seq + i, prev=prev, type=kind, time=now, issuer=issuer, data=data)
        text = control.seal_event(event)
        events.append(event)
        texts.append(text)
        prev = digest(text)
    return events, texts


@dataclass(frozen=True)
class NewLog:
    state: State
    """The base: ``log.started`` is not applied to it yet."""
    checkpoint: str
    event: Event
    text: str

    @property
    def head(self) -> str:
        return f"{self.event.log}:{self.event.seq}:{digest(self.text)}"


def seal_new_log(
    control: ControlKey, issuer: str, base: State, *, log_id: str, previous: LogLink | None, reason: str,
    at: float, after: int,
) -> NewLog:
    """A new log: ``base`` as its checkpoint at seq ``after`` (head: the log's genesis digest),
    then ``log.started`` at ``after + 1``, past every seq readers may hold, so that readers
    blocked on the stream wake up at it."""
    state = base.copy()
    state.log, state.seq, state.time = log_id, after, at
    state.head = State.empty(issuer, log_id).head
    state.log_started, state.previous = at, previous
    checkpoint = control.seal_snapshot(state.to_snapshot())
    data = {"previous": previous.model_dump(mode="json") if previous else None, "reason": reason}
    events, texts = seal_events(control, issuer, state, [(str(EventType.LOG_STARTED), data)], at)
    return NewLog(state, checkpoint, events[0], texts[0])


class LogSigner:
    """The writer's control key: the one the log names, followed across anchor rotations."""

    def __init__(self, control: ControlKey, issuer: str,
                 load: Callable[[str], Awaitable[ControlKey | None]] | None = None) -> None:
        """``load(thumbprint)`` finds the key an anchor rotation moved the log to (another
        writer rotated it); without it, such a log is one this writer cannot sign."""
        self.control = control
        self.anchor = control.anchor
        self._issuer = issuer
        self._load = load
        self._introduced: dict[str, ControlKey] = {}
        self.on_change: list[Callable[[ControlKey], None]] = []
        """Called when the writer moved to a rotated control key (record file, key file)."""

    def introduce(self, key: ControlKey) -> None:
        """A key this writer made for an anchor rotation: followed to from memory, so that a
        Redis writer deleting its slot meanwhile cannot leave the log on a key nobody holds."""
        self._introduced[key.anchor.thumbprint] = key

    async def follow(self, state: State) -> bool:
        """Sign with the key ``state`` names; True when it changed."""
        if not state.anchor or state.anchor == self.control.anchor.thumbprint:
            return False
        key = self._introduced.pop(state.anchor, None)
        if key is None and self._load is not None:
            key = await self._load(state.anchor)
        if key is None:
            raise IssuerError(
                f"the trust anchor was rotated to {state.anchor} and this writer cannot load that control key"
                " (a rotation that did not finish, or another KEK): it appends nothing"
            )
        self.control, self.anchor = key, key.anchor
        log.warning("the trust anchor was rotated: this writer now signs with %s", state.anchor)
        for listener in self.on_change:
            listener(key)
        return True

    def events(self, state: State, drafts: Sequence[Draft], now: float) -> tuple[list[Event], list[str]]:
        return seal_events(self.control, self._issuer, state, drafts, now)

    def new_log(self, base: State, *, log_id: str, previous: LogLink | None, reason: str, at: float,
                after: int) -> NewLog:
        return seal_new_log(self.control, self._issuer, base, log_id=log_id, previous=previous, reason=reason,
                            at=at, after=after)

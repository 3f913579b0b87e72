"""The state both sides derive from the log, and the one fold that derives it.

The issuer folds its own events into the next checkpoint; agents fold the same events into
their caches. Because both run this code, "checkpoint plus tail" equals "the whole log".

An event is folded only when it extends what the state holds: the same log, the next seq,
and ``prev`` equal to the digest of the last event folded. Anything else changes nothing
and says why (:class:`Outcome`), so a reader can refuse a splice and resync on a gap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from pydantic import ValidationError

from .anchorchain import MAX_CHAIN, open_link
from .chain import Position, genesis_head
from .envelope import control_verifying_key
from .events import (
    DEFAULT_HEARTBEAT,
    REVOCATION_GRACE,
    AnchorLink,
    ClientMark,
    ClientUpdatedData,
    Event,
    EventType,
    KeyEventData,
    KeyExpiredData,
    KeyRecord,
    KeyState,
    LogLink,
    LogStartedData,
    PolicyData,
    Snapshot,
    SubjectRevocation,
    SubjectRevokedData,
    TokenRevokedData,
    TokensRevokedData,
)
from .names import stream_id
from .revocations import RevokedTokens, TokenGroups, TokenSet, grouped

__all__ = ["KEY_RANK", "Outcome", "State"]


class Outcome(Enum):
    APPLIED = "applied"
    OLD = "old"
    """seq at or below what is applied: a replay or duplicate, ignored."""
    GAP = "gap"
    """seq beyond the next one: events are missing, resync."""
    BROKEN = "broken"
    """The next seq, but ``prev`` is not the digest of the event held: a splice or a fork."""
    FOREIGN = "foreign"
    """An event of another log: an old log's, or a new log's the reader has not adopted yet."""


@dataclass
class State:
    issuer: str
    log: str = ""
    """The log's id; empty only before a log exists (the issuer's genesis sets it)."""
    seq: int = 0
    head: str = ""
    """Digest of event ``seq``'s signed text: what the next event's ``prev`` must be."""
    time: float = 0.0
    """Issuer time of the last event applied: proof of the issuer's liveness."""
    log_started: float = 0.0
    previous: LogLink | None = None
    max_token_ttl: int = 0
    heartbeat_interval: float = DEFAULT_HEARTBEAT
    keys: dict[str, KeyRecord] = field(default_factory=dict)
    revoked_tokens: TokenSet = field(default_factory=RevokedTokens)
    """jti -> end: the issuer's :class:`RevokedTokens`, an agent's compact store."""
    revoked_subjects: dict[str, SubjectRevocation] = field(default_factory=dict)
    clients: dict[str, ClientMark] = field(default_factory=dict)
    anchor: str = ""
    """Thumbprint of the control key since the last anchor rotation ('' before any)."""
    anchors: list[AnchorLink] = field(default_factory=list)
    """The rotation links that lead to it, oldest first, at most MAX_CHAIN."""

    def __post_init__(self) -> None:
        if isinstance(self.revoked_tokens, dict):  # a plain jti -> end mapping: index it
            self.revoked_tokens = RevokedTokens(self.revoked_tokens.items())

    @classmethod
    def empty(cls, issuer: str, log: str, *, seq: int = 0) -> State:
        """A log before its first event, which is ``seq + 1``, chained to the genesis digest.
        A log that replaces another starts past the seq the old one reached, so that the
        stream's ids keep growing and readers blocked on it wake up at its first event."""
        return cls(issuer=issuer, log=log, seq=seq, head=genesis_head(log))

    @property
    def position(self) -> Position:
        return Position(self.log, self.seq, self.head, self.time)

    def check(self, event: Event) -> Outcome:
        if event.log != self.log:
            return Outcome.FOREIGN
        if event.seq <= self.seq:
            return Outcome.OLD
        if event.seq != self.seq + 1:
            return Outcome.GAP
        if event.prev != self.head:
            return Outcome.BROKEN
        return Outcome.APPLIED

    def apply(self, event: Event, digest: str) -> Outcome:
        """Fold one verified event in, ``digest`` being that of its signed text; only the
        event that extends the chain changes anything.

        Raises ValueError (nothing changed) when a known event type carries bad data.
        """
        outcome = self.check(event)
        if outcome is not Outcome.APPLIED:
            return outcome
        try:
            self._apply_data(event)
        except ValidationError as exc:
            raise ValueError(f"event {event.seq} ({event.type}) has malformed data") from exc
        self.seq = event.seq
        self.head = digest
        self.time = max(self.time, event.time)
        return Outcome.APPLIED

    def _apply_data(self, event: Event) -> None:
        kind, data = event.type, event.data
        if kind in _KEY_EVENTS:
            record = KeyEventData.model_validate(data).key
            self.keys[record.kid] = record
        elif kind == EventType.KEY_EXPIRED:
            self.keys.pop(KeyExpiredData.model_validate(data).kid, None)
        elif kind == EventType.TOKEN_REVOKED:
            token = TokenRevokedData.model_validate(data)
            self.revoked_tokens.revoke(token.jti, token.expires_at)
        elif kind == EventType.TOKENS_REVOKED:
            self.revoked_tokens.revoke_many(TokensRevokedData.model_validate(data).tokens.items())
        elif kind == EventType.SUBJECT_REVOKED:
            subject = SubjectRevokedData.model_validate(data)
            old = self.revoked_subjects.get(subject.sub)
            if old is None or old.revoked_at <= subject.revoked_at:
                self.revoked_subjects[subject.sub] = SubjectRevocation(
                    revoked_at=subject.revoked_at, expires_at=subject.expires_at
                )
        elif kind == EventType.POLICY:
            policy = PolicyData.model_validate(data)
            self.max_token_ttl = policy.max_token_ttl
            self.heartbeat_interval = policy.heartbeat_interval
            self.prune(event.time)
        elif kind == EventType.HEARTBEAT:
            self.prune(event.time)
        elif kind == EventType.LOG_STARTED:
            if event.prev != genesis_head(event.log):
                raise ValueError("log.started is the first event of a log")
            started = LogStartedData.model_validate(data)
            self.log_started = event.time
            self.previous = started.previous
        elif kind == EventType.ANCHOR_ROTATED:
            link = AnchorLink.model_validate(data)
            if self.anchor and link.previous != self.anchor:
                raise ValueError("anchor.rotated does not start at the current anchor")
            try:
                previous = control_verifying_key(link.previous_jwk)
            except ValueError:
                raise ValueError("anchor.rotated names no usable previous key") from None
            new = open_link(link, previous)  # ProtocolError: a link that does not verify
            self.anchor = new.kid
            self.anchors = [] if link.revoke_previous else [*self.anchors, link][-MAX_CHAIN:]
        elif kind == EventType.CLIENT_UPDATED:
            client = ClientUpdatedData.model_validate(data)
            # A deleted client keeps an empty digest: no record matches it, and a log that
            # replaces this one knows it was deleted (not merely unknown).
            self.clients[client.client_id] = ClientMark(record=client.record or "", at=event.time)
        # Unknown types: a newer issuer of the same major version; the seq still advances.

    def client_record(self, client_id: str) -> str | None:
        """The digest the log binds ``client_id``'s record to ('' once deleted, None if never)."""
        mark = self.clients.get(client_id)
        return None if mark is None else mark.record

    def prune(self, now: float) -> None:
        """Drop revocations no token can need any more (deterministic: uses issuer time)."""
        horizon = now - REVOCATION_GRACE
        self.revoked_tokens.prune(horizon)
        for sub in [s for s, r in self.revoked_subjects.items() if r.expires_at < horizon]:
            del self.revoked_subjects[sub]

    def keys_in(self, *states: KeyState) -> list[KeyRecord]:
        return sorted(
            (k for k in self.keys.values() if k.state in states), key=lambda k: (k.published_at, k.kid)
        )

    @property
    def active_key(self) -> KeyRecord | None:
        active = self.keys_in(KeyState.ACTIVE)
        return active[-1] if active else None

    def to_snapshot(self) -> Snapshot:
        if not self.log:
            raise ValueError("a checkpoint needs a log")
        return Snapshot(
            issuer=self.issuer,
            log=self.log,
            log_started=self.log_started,
            previous=self.previous,
            seq=self.seq,
            head=self.head,
            position=stream_id(self.seq) if self.seq else "0-0",
            time=self.time,
            max_token_ttl=self.max_token_ttl,
            heartbeat_interval=self.heartbeat_interval,
            keys=sorted(self.keys.values(), key=lambda k: (k.published_at, k.kid)),
            revoked_subjects=dict(sorted(self.revoked_subjects.items())),
            clients=dict(sorted(self.clients.items())),
            anchor=self.anchor,
            anchors=list(self.anchors),
        ).model_copy(update={"revoked_tokens": _groups(self.revoked_tokens)})  # built right: not checked again

    @classmethod
    def from_snapshot(
        cls, snapshot: Snapshot, *, tokens: Callable[[TokenGroups], TokenSet] | None = None,
    ) -> State:
        """``tokens`` builds the revoked-token store from the checkpoint's (an agent's is compact)."""
        return cls(
            issuer=snapshot.issuer,
            log=snapshot.log,
            seq=snapshot.seq,
            head=snapshot.head,
            time=snapshot.time,
            log_started=snapshot.log_started,
            previous=snapshot.previous,
            max_token_ttl=snapshot.max_token_ttl,
            heartbeat_interval=snapshot.heartbeat_interval,
            keys={k.kid: k for k in snapshot.keys},
            revoked_tokens=(tokens or RevokedTokens.from_groups)(snapshot.revoked_tokens),
            revoked_subjects=dict(snapshot.revoked_subjects),
            clients=dict(snapshot.clients),
            anchor=snapshot.anchor,
            anchors=list(snapshot.anchors),
        )

    def absorb(self, other: State) -> None:
        """Keep what ``other`` knows that may still matter here: its revocations of tokens and
        subjects (unless expired by this state's time), and how far its keys went (a key
        never goes back from revoked or retired). Clients and keys ``self`` does not hold
        are left out: they belong to the other history.

        This is how a log replacing another never rolls a revocation back."""
        horizon = self.time - REVOCATION_GRACE
        self.revoked_tokens.absorb(other.revoked_tokens, horizon)
        for sub, revocation in other.revoked_subjects.items():
            known = self.revoked_subjects.get(sub)
            if revocation.expires_at >= horizon and (known is None or known.revoked_at < revocation.revoked_at):
                self.revoked_subjects[sub] = revocation
        for kid, record in list(self.keys.items()):
            before = other.keys.get(kid)
            if before is not None and KEY_RANK[before.state] > KEY_RANK[record.state]:
                self.keys[kid] = before

    def beyond(self, other: State) -> State | None:
        """What ``self`` would add to ``other`` through :meth:`absorb` (its revocations and key
        states ``other`` lacks), as a state of its own, or None: what a reader keeps, outside
        the signed log, after adopting a log that lacks it."""
        extra = State(issuer=self.issuer, time=self.time,
                      revoked_tokens=self.revoked_tokens.beyond(other.revoked_tokens))
        for sub, revocation in self.revoked_subjects.items():
            known = other.revoked_subjects.get(sub)
            if known is None or known.revoked_at < revocation.revoked_at:
                extra.revoked_subjects[sub] = revocation
        for kid, record in self.keys.items():
            held = other.keys.get(kid)
            if held is not None and KEY_RANK[record.state] > KEY_RANK[held.state]:
                extra.keys[kid] = record
        return extra if (extra.revoked_tokens or extra.revoked_subjects or extra.keys) else None

    def merge_clients(self, other: State) -> None:
        """Take ``other``'s word on a client where it is later than ours (a writer repairing a
        log merges what it held with what Redis held: the last change to each client wins)."""
        for client_id, mark in other.clients.items():
            held = self.clients.get(client_id)
            if held is None or mark.at > held.at:
                self.clients[client_id] = mark

    def copy(self) -> State:
        """An independent copy (the containers; records are immutable)."""
        return State(
            issuer=self.issuer, log=self.log, seq=self.seq, head=self.head, time=self.time,
            log_started=self.log_started, previous=self.previous, max_token_ttl=self.max_token_ttl,
            heartbeat_interval=self.heartbeat_interval, keys=dict(self.keys),
            revoked_tokens=self.revoked_tokens.copy(), revoked_subjects=dict(self.revoked_subjects),
            clients=dict(self.clients), anchor=self.anchor, anchors=list(self.anchors),
        )


def _groups(tokens: TokenSet) -> TokenGroups:
    if not isinstance(tokens, RevokedTokens):
        raise TypeError("only the issuer's store of revoked tokens can be written as a checkpoint")
    return grouped(tokens.items())


KEY_RANK = {KeyState.PUBLISHED: 0, KeyState.ACTIVE: 1, KeyState.RETIRED: 2, KeyState.REVOKED: 3}
"""How far a key has gone in its life; it never goes back."""

_KEY_EVENTS = frozenset(
    {EventType.KEY_PUBLISHED, EventType.KEY_ACTIVATED, EventType.KEY_RETIRED, EventType.KEY_REVOKED}
)

"""The state both sides derive from the log, and the one fold that derives it.

The issuer folds its own events into the next snapshot; agents fold the same events into
their caches. Because both run this code, "snapshot plus tail" equals "the whole log".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from pydantic import ValidationError

from .events import (
    REVOCATION_GRACE,
    Event,
    EventType,
    KeyEventData,
    KeyExpiredData,
    KeyRecord,
    KeyState,
    PolicyData,
    Snapshot,
    SubjectRevocation,
    SubjectRevokedData,
    TokenRevokedData,
)
from .names import stream_id

__all__ = ["Outcome", "State"]


class Outcome(Enum):
    APPLIED = "applied"
    OLD = "old"
    """seq at or below what is applied: a replay or duplicate, ignored."""
    GAP = "gap"
    """seq beyond the next one: events are missing, resync from the snapshot."""


@dataclass
class State:
    issuer: str
    seq: int = 0
    time: float = 0.0
    """Issuer time of the last event applied: proof of the issuer's liveness."""
    max_token_ttl: int = 0
    keys: dict[str, KeyRecord] = field(default_factory=dict)
    revoked_tokens: dict[str, int] = field(default_factory=dict)
    revoked_subjects: dict[str, SubjectRevocation] = field(default_factory=dict)

    def check(self, event: Event) -> Outcome:
        if event.seq <= self.seq:
            return Outcome.OLD
        if event.seq != self.seq + 1:
            return Outcome.GAP
        return Outcome.APPLIED

    def apply(self, event: Event) -> Outcome:
        """Fold one verified event in; only the next seq changes anything.

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
            self.revoked_tokens[token.jti] = max(token.expires_at, self.revoked_tokens.get(token.jti, 0))
        elif kind == EventType.SUBJECT_REVOKED:
            subject = SubjectRevokedData.model_validate(data)
            old = self.revoked_subjects.get(subject.sub)
            if old is None or old.revoked_at <= subject.revoked_at:
                self.revoked_subjects[subject.sub] = SubjectRevocation(
                    revoked_at=subject.revoked_at, expires_at=subject.expires_at
                )
        elif kind == EventType.POLICY:
            self.max_token_ttl = PolicyData.model_validate(data).max_token_ttl
            self.prune(event.time)
        elif kind == EventType.HEARTBEAT:
            self.prune(event.time)
        # Unknown types: a newer issuer; the seq still advances.

    def prune(self, now: float) -> None:
        """Drop revocations no token can need any more (deterministic: uses issuer time)."""
        horizon = now - REVOCATION_GRACE
        for jti in [j for j, exp in self.revoked_tokens.items() if exp < horizon]:
            del self.revoked_tokens[jti]
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
        return Snapshot(
            issuer=self.issuer,
            seq=self.seq,
            position=stream_id(self.seq) if self.seq else "0-0",
            time=self.time,
            max_token_ttl=self.max_token_ttl,
            keys=sorted(self.keys.values(), key=lambda k: (k.published_at, k.kid)),
            revoked_tokens=dict(sorted(self.revoked_tokens.items())),
            revoked_subjects=dict(sorted(self.revoked_subjects.items())),
        )

    @classmethod
    def from_snapshot(cls, snapshot: Snapshot) -> State:
        return cls(
            issuer=snapshot.issuer,
            seq=snapshot.seq,
            time=snapshot.time,
            max_token_ttl=snapshot.max_token_ttl,
            keys={k.kid: k for k in snapshot.keys},
            revoked_tokens=dict(snapshot.revoked_tokens),
            revoked_subjects=dict(snapshot.revoked_subjects),
        )


_KEY_EVENTS = frozenset(
    {EventType.KEY_PUBLISHED, EventType.KEY_ACTIVATED, EventType.KEY_RETIRED, EventType.KEY_REVOKED}
)

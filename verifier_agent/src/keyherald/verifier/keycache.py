"""The agent's in-memory view of the issuer: the shared state fold plus parsed public keys.

Written only by the follower (one task), read by ``verify`` on any thread: every update
swaps whole objects, so a reader never sees half an event.

It also keeps **tombstones**: the kids it saw revoked or expired. A snapshot or event from a
log that forgot them (Redis restored from an old backup, a new log started from stale
issuer data) cannot make such a key usable again: a revoked one stays revoked, an expired
one stays gone. Tombstones are bounded: each lives until a day after its key's
``expires_at`` (issuer time; no token the key signed can be valid by then, and the signing
window refuses fresh ones), and at most ``MAX_TOMBSTONES`` are kept (the soonest to end go
first).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from keyherald.shared.events import Event, EventType, KeyRecord, KeyState, Snapshot
from keyherald.shared.jwk import VerifyingKey
from keyherald.shared.state import Outcome, State

from .revocations import CompactRevocations

__all__ = ["MAX_TOMBSTONES", "TOMBSTONE_MARGIN", "KeyCache", "Staleness", "Tombstone"]

Staleness = float | Literal["auto"] | None
"""Seconds without a verified event after which every token is refused; ``auto``: the
issuer's maximum token lifetime plus the leeway; None: never."""

TOMBSTONE_MARGIN = 86_400
"""Seconds a tombstone outlives its key's ``expires_at``."""
MAX_TOMBSTONES = 4_096


@dataclass(frozen=True)
class Tombstone:
    until: float
    """Issuer time after which the tombstone is dropped."""
    revoked: KeyRecord | None
    """The revoked record to put back, when the agent saw one; else the key is dropped."""


class KeyCache:
    def __init__(self, issuer: str) -> None:
        self.state = State(issuer=issuer, revoked_tokens=CompactRevocations())
        self._verifying: dict[str, VerifyingKey] = {}
        self.bootstrapped = False
        self.tombstones: dict[str, Tombstone] = {}
        self.current = False
        """The state was shown current once (fresh from Redis, or the agent's own memory):
        until then every token is refused (``stale``)."""
        self.staleness: Staleness = None
        self.leeway = 0.0
        self.stale_after = -math.inf
        """What ``verify`` compares ``now - state.time`` with: -inf until current, then the
        staleness limit (inf when there is none). One float on the hot path."""
        self.on_lower_ttl: list[Callable[[], None]] = []
        """Called when the issuer's maximum token lifetime goes down (validators drop cached
        tokens that may now claim too much)."""
        self._ttl = 0

    def configure(self, staleness: Staleness, leeway: float) -> None:
        self.staleness, self.leeway = staleness, leeway
        self._limit()

    def set_current(self, current: bool) -> None:
        self.current = current
        self._limit()

    def _limit(self) -> None:
        ttl = self.state.max_token_ttl
        if ttl < self._ttl:
            for listener in self.on_lower_ttl:
                listener()
        self._ttl = ttl
        staleness = self.staleness
        if not self.current or not self.bootstrapped:
            self.stale_after = -math.inf
        elif staleness is None:
            self.stale_after = math.inf
        elif staleness == "auto":
            ttl = self.state.max_token_ttl or 300
            self.stale_after = ttl + self.leeway
        else:
            self.stale_after = float(staleness)

    def load_snapshot(self, snapshot: Snapshot, *, current: bool = True) -> None:
        """Replace everything with a verified snapshot (bootstrap, resync or reset)."""
        self.load_state(State.from_snapshot(snapshot, tokens=CompactRevocations.from_groups), current=current)

    def load_state(self, state: State, *, current: bool = True) -> None:
        self._swap(state, expired=())
        self.bootstrapped = True
        self.current = self.current or current
        self._limit()

    def apply(self, event: Event, digest: str) -> Outcome:
        """Fold a verified event in. Raises ValueError, changing nothing, on malformed data."""
        outcome = self.state.check(event)
        if outcome is not Outcome.APPLIED:
            return outcome
        state = self.state.copy() if event.type.startswith("key.") else self.state
        outcome = state.apply(event, digest)
        if state is not self.state:
            expiring = event.type == EventType.KEY_EXPIRED
            self._swap(state, expired=[k for k in self.state.keys if k not in state.keys] if expiring else ())
        elif event.type == EventType.POLICY:
            self._limit()
        return outcome

    def _swap(self, state: State, *, expired: list[str] | tuple[str, ...]) -> None:
        """Parse the keys (raising before anything changes), apply the tombstones, swap."""
        verifying = self._parse_keys(state.keys, self._verifying)
        self._bury(self.state, state, expired=expired)
        self._guard(state)
        self._verifying = {kid: key for kid, key in verifying.items() if kid in state.keys}
        self.state = state

    def _bury(self, old: State, new: State, *, expired: list[str] | tuple[str, ...]) -> None:
        """Tombstone the keys ``new`` holds revoked, and those that left it by expiring."""
        for kid, record in new.keys.items():
            if record.state is KeyState.REVOKED:
                self.tombstones[kid] = Tombstone(_until(record, new.time), record)
        for kid, record in old.keys.items():
            if kid in new.keys:
                continue
            gone = kid in expired or (record.expires_at is not None and record.expires_at <= new.time)
            if gone:
                known = self.tombstones.get(kid)
                revoked = record if record.state is KeyState.REVOKED else (known.revoked if known else None)
                self.tombstones[kid] = Tombstone(_until(record, new.time), revoked)

    def _guard(self, state: State) -> None:
        """Keep tombstoned keys unusable in ``state``; drop tombstones past their time."""
        stones = self.tombstones
        for kid in [k for k, stone in stones.items() if stone.until < state.time]:
            del stones[kid]
        if len(stones) > MAX_TOMBSTONES:
            for kid in sorted(stones, key=lambda k: stones[k].until)[: len(stones) - MAX_TOMBSTONES]:
                del stones[kid]
        for kid, stone in stones.items():
            record = state.keys.get(kid)
            if record is None or record.state is KeyState.REVOKED:
                continue
            if stone.revoked is not None:  # the same kid is the same key (RFC 7638)
                state.keys[kid] = stone.revoked
            else:
                del state.keys[kid]

    @staticmethod
    def _parse_keys(keys: dict[str, KeyRecord], old: dict[str, VerifyingKey]) -> dict[str, VerifyingKey]:
        parsed: dict[str, VerifyingKey] = {}
        for kid, record in keys.items():
            known = old.get(kid)
            if known is None:
                known = VerifyingKey.from_jwk(record.jwk)
                if known.kid != kid or known.alg != record.alg:
                    raise ValueError(f"key {kid} does not match its published JWK")
            parsed[kid] = known
        return parsed

    def record(self, kid: str) -> KeyRecord | None:
        return self.state.keys.get(kid)

    def verifying_key(self, kid: str) -> VerifyingKey | None:
        return self._verifying.get(kid)


def _until(record: KeyRecord, now: float) -> float:
    end = record.expires_at if record.expires_at is not None else now
    return end + TOMBSTONE_MARGIN

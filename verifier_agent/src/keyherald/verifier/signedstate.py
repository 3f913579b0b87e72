"""The agent's verified mirror of the log: every envelope opened with the trust anchor, then folded.

One path for every source of signed material (Redis, the cache file, the in-memory test
issuer), so nothing reaches the key cache without its signature checked. It also keeps the
signed texts it applied (the last snapshot JWS plus the event JWSs after it): the cache
file writes exactly those, and re-verifies them when it boots from disk.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from keyherald.shared.envelope import TrustAnchor
from keyherald.shared.errors import ProtocolError
from keyherald.shared.events import REVOCATION_GRACE, Event, KeyState, Snapshot
from keyherald.shared.state import Outcome, State

from .keycache import KeyCache

__all__ = ["Adoption", "Material", "SignedState", "set_shared_verification"]

log = logging.getLogger("keyherald.verifier")

_SHARED_SIZE = 256
_shared: dict[tuple[str, str, str], Event] | None = {}
"""Envelopes this process already verified, by (anchor thumbprint, issuer, exact text).

Several agents in one process (one per audience, or a benchmark's thousand) receive the
same bytes; the first checks the signature, the others reuse that verdict. Only successes
are kept, keyed by the exact text and the pinned key's thumbprint, so nothing unverified
can enter: a different byte is a different key."""


def set_shared_verification(enabled: bool) -> None:
    """Turn the per-process sharing of envelope verification on (default) or off."""
    global _shared
    _shared = {} if enabled else None


def _open_event(anchor: TrustAnchor, text: str, issuer: str) -> Event:
    shared = _shared
    if shared is None:
        return anchor.open_event(text, issuer=issuer)
    key = (anchor.thumbprint, issuer, text)
    event = shared.get(key)
    if event is None:
        event = anchor.open_event(text, issuer=issuer)
        shared[key] = event
        if len(shared) > _SHARED_SIZE:
            try:
                del shared[next(iter(shared))]
            except (KeyError, RuntimeError, StopIteration):  # another thread trimmed it
                pass
    return event


_RANK = {KeyState.PUBLISHED: 0, KeyState.ACTIVE: 1, KeyState.RETIRED: 2, KeyState.REVOKED: 3}


class Adoption(Enum):
    """What :meth:`SignedState.adopt` made of a snapshot."""

    RESYNC = "resync"
    RESET = "reset"
    SAME = "same"
    REFUSED = "refused"


@dataclass(frozen=True)
class Material:
    """Signed texts that rebuild the state: a snapshot JWS and the event JWSs applied after it."""

    snapshot: str
    events: tuple[str, ...] = ()


class SignedState:
    """Opens envelopes, folds them into a KeyCache, counts what it refuses."""

    def __init__(self, keys: KeyCache, anchor: TrustAnchor, *, issuer: str) -> None:
        self.keys = keys
        self.anchor = anchor
        self.issuer = issuer
        self.refused: Counter[str] = Counter()
        """Envelopes refused, by reason code (bad_signature, untrusted_signer, malformed, ...)."""
        self.resyncs = 0
        self.resets = 0
        self._snapshot: str | None = None
        self._events: list[str] = []
        self.version = 0
        """Bumped whenever the material changes: the cache file writer watches it."""
        self.listeners: list[Callable[[Event], None]] = []
        """Called with each event applied (metrics, benchmarks); must be quick and not raise."""

    @property
    def material(self) -> Material | None:
        if self._snapshot is None:
            return None
        return Material(self._snapshot, tuple(self._events))

    @property
    def pending_events(self) -> int:
        return len(self._events)

    def open_snapshot(self, text: str) -> Snapshot:
        """Verify a snapshot; raises ProtocolError (WrongIssuer included) and counts nothing."""
        return self.anchor.open_snapshot(text, issuer=self.issuer)

    def load(self, text: str, snapshot: Snapshot) -> None:
        """Start from a verified snapshot (bootstrap, the cache file); following uses adopt."""
        self.keys.load_snapshot(snapshot)
        self._remember(text)

    def adopt(self, text: str, snapshot: Snapshot, *, gap: bool = False) -> Adoption:
        """Decide what a verified snapshot read while following means, and act on it.

        The signature proves the issuer wrote the snapshot, not that it is current: anyone
        who can write Redis may put back one recorded earlier. Log time never goes back
        (the issuer's appends keep ``time`` monotonic, and a log started again after losing
        Redis starts later), so time orders snapshots even across logs, where seq cannot:

        - older in time than the state: a replay (or a log the issuer left): refused, counted;
        - at our seq and time: our log where we are (compacts the kept events; a gap reloads);
        - ahead in seq, not older in time: our log moved on: resync;
        - at or behind our seq but later in time: another log (a new one, or a restored
          backup the issuer went on with): reset.

        A genuine new log refused because its time is not yet past ours is adopted on its
        next heartbeat. Resync and reset both keep the revocations the state knew.
        """
        state = self.keys.state
        if snapshot.time < state.time or (snapshot.time == state.time and snapshot.seq < state.seq):
            self.refused["snapshot_replayed"] += 1
            log.warning(
                "refused a snapshot older than the state (seq %d at %.3f, state seq %d at %.3f): "
                "a replay or an abandoned log", snapshot.seq, snapshot.time, state.seq, state.time,
            )
            return Adoption.REFUSED
        if snapshot.seq > state.seq or (gap and snapshot.seq == state.seq and snapshot.time == state.time):
            self._merge(text, snapshot)
            self.resyncs += 1
            return Adoption.RESYNC
        if snapshot.time > state.time:
            self.reset(text, snapshot)
            return Adoption.RESET
        self.compact(text)
        return Adoption.SAME

    def reset(self, text: str, snapshot: Snapshot) -> bool:
        """Adopt a verified snapshot at or *behind* the state's seq but later in time: a new
        log, or Redis restored from an older backup that the issuer went on with. Anything
        not later in time is a replay: refused (False), counted. Revocations never roll back:
        revoked tokens and subjects are kept until they expire, a key keeps the furthest
        state it reached (a retired key never becomes active again), and the key cache's
        tombstones keep revoked and expired keys unusable. Keys the new log does not hold
        are dropped.
        """
        old = self.keys.state
        if snapshot.time <= old.time:
            self.refused["snapshot_replayed"] += 1
            log.warning("refused a snapshot not later than the state: a replay of an older one")
            return False
        self._merge(text, snapshot)
        self.resets += 1
        log.warning(
            "the issuer's log went back from seq %d to %d (new log or restored backup); "
            "revocations were kept", old.seq, snapshot.seq,
        )
        return True

    def _merge(self, text: str, snapshot: Snapshot) -> None:
        """Load ``snapshot`` keeping what the state knew that it may lack (see reset)."""
        old = self.keys.state
        new = State.from_snapshot(snapshot)
        horizon = snapshot.time - REVOCATION_GRACE  # what the fold would prune at once
        for jti, expires_at in old.revoked_tokens.items():
            if expires_at >= horizon:
                new.revoked_tokens[jti] = max(expires_at, new.revoked_tokens.get(jti, 0))
        for sub, revocation in old.revoked_subjects.items():
            known = new.revoked_subjects.get(sub)
            if revocation.expires_at >= horizon and (known is None or known.revoked_at < revocation.revoked_at):
                new.revoked_subjects[sub] = revocation
        for kid, record in list(new.keys.items()):
            before = old.keys.get(kid)
            if before is not None and _RANK[before.state] > _RANK[record.state]:
                new.keys[kid] = before
        self.keys.load_snapshot(new.to_snapshot())
        self._remember(text)

    def offer(self, text: object) -> Outcome | None:
        """Open and fold one event; None when it was refused (counted, nothing applied)."""
        return self.offer_seq(text)[0]

    def offer_seq(self, text: object) -> tuple[Outcome | None, int | None]:
        """As :meth:`offer`, with the seq of the event when it verified (the follower checks
        that its stream id is that seq's)."""
        try:
            if not isinstance(text, str):
                raise TypeError("stream entry without an event text")
            event = _open_event(self.anchor, text, self.issuer)
            outcome = self.keys.apply(event)
        except ProtocolError as exc:
            self._refuse(exc.code)
            return None, None
        except (ValueError, TypeError):
            self._refuse("malformed")
            return None, None
        except Exception as exc:  # one unreadable entry must not stop following
            log.error("could not process an event from the log (%s)", type(exc).__name__)
            self._refuse("unprocessable")
            return None, None
        if outcome is Outcome.APPLIED:
            self._events.append(text)
            self.version += 1
            for listener in self.listeners:
                listener(event)
        return outcome, event.seq

    def compact(self, text: str) -> None:
        """A verified snapshot at exactly the current seq replaces the events kept after the last."""
        self._remember(text)

    def _remember(self, text: str) -> None:
        self._snapshot = text
        self._events = []
        self.version += 1

    def _refuse(self, code: str) -> None:
        self.refused[code] += 1
        log.warning("refused an event from the log (%s)", code)

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())

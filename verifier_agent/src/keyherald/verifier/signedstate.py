"""The agent's verified mirror of the log: every envelope opened with the trust anchor, then folded.

One path for every source of signed material (Redis, the cache file, the in-memory test
issuer), so nothing reaches the key cache without its signature checked, and no event is
applied unless it extends the chain the agent holds. It also keeps the signed texts it
applied (a checkpoint JWS plus the event JWSs after it): the cache file writes exactly those,
and verifies them again when it boots from disk.

Checkpoints read while following are judged by :func:`keyherald.shared.lineage.relate`:
further on our log resyncs, a newer log resets (keeping every revocation the agent holds),
an earlier point of our log is simply not news, and a fork or an older log is refused and
counted.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from keyherald.shared.anchorchain import after_event, follow
from keyherald.shared.anchorchain import open_snapshot as open_chained
from keyherald.shared.chain import Position, digest
from keyherald.shared.encoding import b64url_decode, loads_object
from keyherald.shared.envelope import TrustAnchor
from keyherald.shared.errors import BrokenAnchorChain, ProtocolError
from keyherald.shared.events import Event, EventType, Snapshot
from keyherald.shared.lineage import Relation, relate
from keyherald.shared.revocations import RevokedTokens, group_items, read_groups
from keyherald.shared.state import Outcome, State

from .keycache import KeyCache
from .revocations import CompactRevocations

__all__ = ["MAX_LEFT", "Adoption", "Material", "SignedState", "held_jtis", "set_shared_verification", "with_jtis"]

log = logging.getLogger("keyherald.verifier")

MAX_LEFT = 64
"""Logs remembered as left: never adopted again."""
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


class Adoption(Enum):
    """What :meth:`SignedState.adopt` made of a checkpoint."""

    RESYNC = "resync"
    RESET = "reset"
    SAME = "same"
    BEHIND = "behind"
    """An earlier point of our log (the usual checkpoint): nothing to take from it."""
    REFUSED = "refused"


@dataclass(frozen=True)
class Material:
    """Signed texts that rebuild the state: a checkpoint JWS and the event JWSs after it, and
    the logs the agent left (which it must never adopt again)."""

    snapshot: str
    events: tuple[str, ...] = ()
    left: tuple[str, ...] = ()
    kept: State | None = None
    """Revocations and key states kept from logs left, that the signed texts lack: they can
    only make the state refuse more (applied with :meth:`State.absorb`)."""


def held_jtis(material: Material) -> RevokedTokens:
    """The revoked jtis that signed material holds (texts verified when they were applied):
    what a compact store's hashes cannot give back."""
    held = RevokedTokens()
    try:
        checkpoint = loads_object(b64url_decode(material.snapshot.split(".")[1]))
        held.revoke_many(group_items(read_groups(checkpoint.get("revoked_tokens", []))))
        for text in material.events:
            event = loads_object(b64url_decode(text.split(".")[1]))
            data = event.get("data", {})
            if event.get("type") == EventType.TOKEN_REVOKED:
                held.revoke(data["jti"], data["expires_at"])
            elif event.get("type") == EventType.TOKENS_REVOKED:
                held.revoke_many(data["tokens"].items())
    except (ValueError, IndexError, KeyError, AttributeError, TypeError):
        log.error("could not read back the revocations of the signed texts held")
    if material.kept is not None and isinstance(material.kept.revoked_tokens, RevokedTokens):
        held.absorb(material.kept.revoked_tokens, float("-inf"))
    return held


def with_jtis(kept: State | None, material: Material | None, new: State) -> State | None:
    """``kept`` (what a new log lacks) with its tokens as jtis, read from ``material``, so that
    the cache file can keep them; as it is without material (nothing to write then)."""
    if kept is None or material is None or not material.snapshot or not kept.revoked_tokens:
        return kept
    kept.revoked_tokens = held_jtis(material).beyond(new.revoked_tokens)
    return kept


class SignedState:
    """Opens envelopes, folds them into a KeyCache, counts what it refuses."""

    def __init__(self, keys: KeyCache, anchor: TrustAnchor, *, issuer: str) -> None:
        self.keys = keys
        self.anchor = anchor
        self.issuer = issuer
        self.refused: Counter[str] = Counter()
        """Envelopes refused, by reason code (bad_signature, chain_broken, fork, ...)."""
        self.resyncs = 0
        self.resets = 0
        self.left: list[str] = []
        self._snapshot: str | None = None
        self._base_seq = 0
        self._events: list[tuple[int, str]] = []
        self._kept: State | None = None
        self.version = 0
        """Bumped whenever the material changes: the cache file writer watches it."""
        self.listeners: list[Callable[[Event], None]] = []
        """Called with each event applied (metrics, benchmarks); must be quick and not raise."""
        self.keep_texts = True
        """Keep the signed texts (for the cache file). Off, the checkpoint's text (about 50 B
        per revocation) is not held after loading it."""

    @property
    def position(self) -> Position:
        return self.keys.state.position

    @property
    def material(self) -> Material | None:
        if self._snapshot is None:
            return None
        kept = self._kept
        if kept is not None:  # what no token can need any more goes, as in the log
            kept.prune(self.keys.state.time)
            kept.keys = {kid: k for kid, k in kept.keys.items() if kid in self.keys.state.keys}
        return Material(self._snapshot, tuple(text for _, text in self._events), tuple(self.left), kept)

    @property
    def pending_events(self) -> int:
        return len(self._events)

    def open_snapshot(self, text: str) -> Snapshot:
        """Verify a checkpoint, signed by our anchor or by a key its rotation chain leads to;
        raises ProtocolError (WrongIssuer included) and counts nothing."""
        return open_chained(self.anchor, text, issuer=self.issuer)[0]

    def _follow_anchor(self) -> None:
        """After loading a state: the anchor it names (an anchor rotated since ours) opens
        what follows. The chain was checked when the checkpoint was opened; checked again."""
        state = self.keys.state
        if state.anchor and state.anchor != self.anchor.thumbprint:
            self.anchor = follow(self.anchor, state.anchors, state.anchor)
            log.warning("the trust anchor was rotated: now %s", self.anchor.thumbprint)

    def load(self, text: str, snapshot: Snapshot, *, current: bool = True) -> None:
        """Start from a verified checkpoint (bootstrap, the cache file); following uses adopt."""
        self.keys.load_snapshot(snapshot, current=current)
        self._follow_anchor()
        self._remember(text, snapshot.seq)

    def load_state(self, state: State, material: Material, *, current: bool) -> None:
        """Take a state built and verified elsewhere (a scratch SignedState), with its texts."""
        self.keys.load_state(state, current=current)
        self._follow_anchor()
        self._snapshot = material.snapshot if self.keep_texts else ""
        self._base_seq = state.seq - len(material.events)
        self._events = [(self._base_seq + i, text) for i, text in enumerate(material.events, start=1)
                        if self.keep_texts]
        for log_id in material.left:
            self._leave(log_id)
        self._kept = material.kept
        self.version += 1

    def relation(self, snapshot: Snapshot) -> Relation:
        state = self.keys.state
        candidate = Position(snapshot.log, snapshot.seq, snapshot.head, snapshot.time)
        return relate(state.position, candidate, previous=snapshot.previous, left=self.left)

    def adopt(self, text: str, snapshot: Snapshot) -> Adoption:
        """Decide what a verified checkpoint read while following means, and act on it.

        The signature proves the issuer wrote it, not that it is current: anyone who can write
        Redis may put back one recorded earlier, or one of a log the issuer left.
        """
        relation = self.relation(snapshot)
        state = self.keys.state
        if relation is Relation.SAME:
            self.compact(text, snapshot)
            return Adoption.SAME
        if relation is Relation.BEHIND:
            self.compact(text, snapshot)
            return Adoption.BEHIND
        if relation is Relation.AHEAD:
            self._merge(text, snapshot)
            self.resyncs += 1
            return Adoption.RESYNC
        if relation is Relation.NEWER_LOG:
            old = state.position
            self._leave(old.log)
            self._merge(text, snapshot)
            self.resets += 1
            log.warning(
                "the issuer started a new log (%s, after %s): revocations were kept", snapshot.log[:8], old
            )
            return Adoption.RESET
        reason = "fork" if relation is Relation.FORK else "snapshot_replayed"
        self.refused[reason] += 1
        log.warning(
            "refused a checkpoint (%s): log %s seq %d at %.3f, ours %s at %.3f",
            reason, snapshot.log[:8], snapshot.seq, snapshot.time, state.position, state.time,
        )
        return Adoption.REFUSED

    def _leave(self, log_id: str) -> None:
        if log_id and log_id not in self.left:
            self.left = [*self.left, log_id][-MAX_LEFT:]

    def _merge(self, text: str, snapshot: Snapshot) -> None:
        """Load ``snapshot`` keeping what the state knew that it may lack: revocations never
        roll back, a key keeps the furthest state it reached, and the key cache's tombstones
        keep revoked and expired keys unusable. Keys the checkpoint does not hold are dropped."""
        new = State.from_snapshot(snapshot, tokens=CompactRevocations.from_groups)
        material = self.material if self.keep_texts else None
        self._kept = with_jtis(self.keys.state.beyond(new), material, new)
        new.absorb(self.keys.state)
        self.keys.load_state(new, current=False)
        self._follow_anchor()
        self._remember(text, snapshot.seq)

    def offer(self, text: object) -> Outcome | None:
        """Open and fold one event; None when it was refused (counted, nothing applied)."""
        return self.offer_event(text)[0]

    def offer_event(self, text: object) -> tuple[Outcome | None, Event | None]:
        """As :meth:`offer`, with the event when it verified (the follower checks that its
        stream id is its seq's). A BROKEN event is counted as refused (``chain_broken``); a
        FOREIGN one is left to the caller, who first looks whether its log is the new one."""
        try:
            if not isinstance(text, str):
                raise TypeError("stream entry without an event text")
            event = _open_event(self.anchor, text, self.issuer)
            if event.type == EventType.ANCHOR_ROTATED and event.data.get("previous") != self.anchor.thumbprint:
                raise BrokenAnchorChain("anchor.rotated does not start at the current anchor")
            outcome = self.keys.apply(event, digest(text))
        except ProtocolError as exc:
            if exc.code == "unsupported_version":  # genuine (it verified): the operator must act
                log.error("%s; this agent stays at seq %d and goes stale", exc, self.keys.state.seq)
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
            if event.type == EventType.ANCHOR_ROTATED:
                self.anchor = after_event(self.anchor, event)
                log.warning("the trust anchor was rotated at seq %d: now %s", event.seq, self.anchor.thumbprint)
            if self.keep_texts:
                self._events.append((event.seq, text))
            self.version += 1
            for listener in self.listeners:
                listener(event)
        elif outcome is Outcome.BROKEN:
            self._refuse("chain_broken")
        return outcome, event

    def refuse_foreign(self) -> None:
        self._refuse("other_log")

    def compact(self, text: str, snapshot: Snapshot) -> None:
        """A verified checkpoint of our log at or before our seq replaces the texts kept up
        to it (the cache file then needs only the events after it)."""
        if snapshot.seq < self._base_seq:
            return
        self._snapshot, self._base_seq = (text if self.keep_texts else ""), snapshot.seq
        self._events = [(seq, t) for seq, t in self._events if seq > snapshot.seq]
        self.version += 1

    def _remember(self, text: str, seq: int) -> None:
        self._snapshot, self._base_seq = (text if self.keep_texts else ""), seq
        self._events = []
        self.version += 1

    def _refuse(self, code: str) -> None:
        self.refused[code] += 1
        log.warning("refused an event from the log (%s)", code)

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())

"""Building a verified state from signed material: a checkpoint and the events after it.

Used to bootstrap from Redis (checkpoint, then the tail read with XRANGE), to boot from the
cache file, and to resync; always into a scratch :class:`SignedState`, so that nothing
reaches the live state before all of it verified and the agent decided to take it (a state
from Redis older than the cache file is refused, not loaded).
"""

from __future__ import annotations

from dataclasses import dataclass

from keyherald.shared.errors import MalformedMessage
from keyherald.shared.names import stream_id
from keyherald.shared.state import Outcome, State

from .keycache import KeyCache
from .signedstate import Material, SignedState
from .source import BATCH, LogSource, entry_id, event_value, text

__all__ = ["Candidate", "MaterialError", "from_material", "from_redis", "scratch_of"]


class MaterialError(Exception):
    """Signed material that does not verify or does not chain."""


@dataclass(frozen=True)
class Candidate:
    """A verified state and the texts it was built from."""

    state: State
    material: Material
    checkpoint_seq: int
    problem: str | None = None
    """Why the tail stopped before the stream's end (a gap, a splice), or None."""


def scratch_of(signed: SignedState) -> SignedState:
    return SignedState(KeyCache(signed.issuer), signed.anchor, issuer=signed.issuer)


def from_material(signed: SignedState, material: Material) -> Candidate:
    """Verify a checkpoint and every event after it; MaterialError on the first that fails."""
    scratch = scratch_of(signed)
    try:
        snapshot = scratch.open_snapshot(material.snapshot)
    except Exception as exc:
        code = getattr(exc, "code", type(exc).__name__)
        raise MaterialError(f"its checkpoint does not verify ({code})") from None
    scratch.load(material.snapshot, snapshot)
    for event_text in material.events:
        if scratch.offer(event_text) is not Outcome.APPLIED:
            code = next(iter(scratch.refused), "out_of_sequence")
            raise MaterialError(f"an event does not verify or chain ({code})")
    state = scratch.keys.state
    if material.kept is not None:
        state.absorb(material.kept)  # stricter only: revocations added, keys moved on
    return Candidate(state, material, snapshot.seq)


async def from_redis(source: LogSource, signed: SignedState) -> Candidate:
    """The checkpoint and the tail that chains to it. Raises NoSnapshot, CheckpointTooLarge,
    ProtocolError (a checkpoint that does not verify) or a Redis error."""
    raw = await source.checkpoint()
    checkpoint = text(raw)
    if not isinstance(checkpoint, str):
        raise MalformedMessage("the checkpoint is not ASCII text")
    scratch = scratch_of(signed)
    snapshot = scratch.open_snapshot(checkpoint)
    scratch.load(checkpoint, snapshot)
    problem = await follow_tail(source, scratch)
    material = scratch.material
    assert material is not None
    return Candidate(scratch.keys.state, material, snapshot.seq, problem)


async def follow_tail(source: LogSource, signed: SignedState) -> str | None:
    """Apply the stream's events after ``signed``'s seq while they chain; None when the
    stream ended, else why it stopped (a gap, a splice, another log)."""
    while True:
        seq = signed.keys.state.seq
        batch = await source.tail(seq)
        if not batch:
            return None
        for raw_id, fields in batch:
            place = entry_id(raw_id)
            expected = signed.keys.state.seq + 1
            if place is None or place < (expected, 0):
                continue
            if place != (expected, 0):
                if place[0] == expected - 1:
                    continue  # junk within the slot of the event held
                return f"events are missing after seq {expected - 1}"
            outcome, _ = signed.offer_event(text(event_value(fields)))
            if outcome is not Outcome.APPLIED:
                if outcome is Outcome.FOREIGN:
                    return f"the entry at {stream_id(expected)} belongs to another log"
                return f"the entry at {stream_id(expected)} does not extend the log"
        if len(batch) < BATCH:
            return None

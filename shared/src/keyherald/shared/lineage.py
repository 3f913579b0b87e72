"""Which of two points of the log is newer, and how fresh a point is: pure decisions.

A reader holds a position (log, seq, head digest, time) and is shown another one, read from
Redis, which anyone who can write Redis may have put there. Signatures prove the issuer
wrote it, never that it is current. These rules order genuine material:

- within one log, seq orders, and the head digest tells a fork from the same point;
- across logs, the later one wins: a log started by a writer that knew ours (its
  ``previous`` names our log at or past our seq), or whose newest event is later in time
  than ours. A log the reader left once is never adopted again, whatever its time.

Freshness is how a reader tells "no news" from "news withheld": the issuer appends at least
one event (a heartbeat) every ``heartbeat_interval``, signed, chained and timed; a reader
whose newest event is older than a few intervals is not fresh.
"""

from __future__ import annotations

from collections.abc import Collection
from enum import Enum

from .chain import Position
from .events import LogLink

__all__ = ["FRESHNESS_HEARTBEATS", "FRESHNESS_MARGIN", "Relation", "freshness_bound", "relate"]

FRESHNESS_HEARTBEATS = 3
"""Heartbeat intervals a reader may go without a verified event and still call itself fresh."""
FRESHNESS_MARGIN = 2.0
"""Seconds added for the read path and modest clock skew between the issuer and a reader."""


def freshness_bound(heartbeat_interval: float) -> float:
    """Seconds after the newest verified event at which a reader stops being fresh."""
    return FRESHNESS_HEARTBEATS * heartbeat_interval + FRESHNESS_MARGIN


class Relation(Enum):
    SAME = "same"
    AHEAD = "ahead"
    """The same log, further on: catch up."""
    BEHIND = "behind"
    """The same log, an earlier point: a replay of old material (or a rollback)."""
    FORK = "fork"
    """The same log and seq with another digest: two histories under one log id."""
    NEWER_LOG = "newer_log"
    """Another log that supersedes ours: adopt it, keeping every revocation we hold."""
    OLDER_LOG = "older_log"
    """Another log that does not: an old or abandoned log, refused."""


def relate(
    current: Position,
    candidate: Position,
    *,
    previous: LogLink | None = None,
    left: Collection[str] = (),
) -> Relation:
    """How ``candidate`` (and its log's ``previous`` link) stands to ``current``."""
    if candidate.log == current.log:
        if candidate.seq > current.seq:
            return Relation.AHEAD
        if candidate.seq < current.seq:
            return Relation.BEHIND
        return Relation.SAME if candidate.head == current.head else Relation.FORK
    if candidate.log in left:
        return Relation.OLDER_LOG
    if previous is not None and previous.log == current.log and previous.seq >= current.seq:
        return Relation.NEWER_LOG
    if candidate.time > current.time:
        return Relation.NEWER_LOG
    return Relation.OLDER_LOG

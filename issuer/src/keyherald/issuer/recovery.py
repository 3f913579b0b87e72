"""What a writer does with the log Redis holds: pure decisions, applied by :mod:`.eventlog`.

A writer compares what it knows (its verified state in memory, or the record it keeps on
disk) with what Redis holds (:class:`~.logreader.Observed`):

- Redis is where it was or further on the same log, or on a newer log: follow it.
- A writer that holds the state in memory repairs everything else by starting a new log
  from what it knows plus whatever Redis holds that verifies: Redis went back (a rollback,
  a failover that lost writes), was wiped, holds junk, or forked. Readers adopt the new log
  (its ``previous`` names ours, and it is later in time) and keep every revocation they had.
  A new log, never the same one rewritten: some reader may have applied events this writer
  never saw, and only a new log id makes them move on rather than wait for seqs they hold.
- A writer without that state (the ``keyherald`` command, a replica that just started)
  cannot tell a rollback from an idle issuer, so it refuses a log older than its record, and
  a log whose newest event is older than the freshness bound: however it compares with the
  record, an old point shown while the live log moved on would fork it. One exception: the
  log is exactly where this host's record left it and no replica holds the lease (the whole
  fleet was down: nobody can have moved it on). The operator decides the rest, with
  ``keyherald log accept`` (or ``issuer run --accept-stale-log``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from keyherald.shared.lineage import Relation, relate
from keyherald.shared.state import State

from .highwater import HighWater
from .logreader import Observed

__all__ = ["Action", "Decision", "decide"]


class Action(Enum):
    FOLLOW = "follow"
    """Take the observed state as the current one."""
    ADOPT = "adopt"
    """A newer log: take it, then append what we know that it lacks."""
    RECOVER = "recover"
    """Start a new log from our state merged with whatever verified in Redis."""
    GENESIS = "genesis"
    """An empty namespace: start the first log."""
    REFUSE = "refuse"
    """Cannot tell what is current without an operator: do not append."""


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str = ""


def decide(
    observed: Observed,
    *,
    ours: State | None,
    record: HighWater | None,
    now: float,
    freshness: float,
    allow_stale: bool = False,
    left: tuple[str, ...] = (),
    lease_held: bool = True,
) -> Decision:
    """What to do with ``observed``, given the state in memory (``ours``) or, without one, the
    local ``record``; ``freshness`` is the bound a memoryless writer holds a log to."""
    seen = observed.state
    if ours is not None:
        if observed.empty:
            return Decision(Action.RECOVER, "Redis holds no log any more (lost its data, or wiped)")
        if seen is None:
            return Decision(Action.RECOVER, f"the log in Redis does not verify: {observed.problem}")
        relation = relate(ours.position, seen.position, previous=seen.previous, left=left)
        if relation is Relation.NEWER_LOG:
            return Decision(Action.ADOPT, f"a newer log {seen.log[:8]} replaced ours")
        if relation in (Relation.SAME, Relation.AHEAD):
            if observed.problem is not None and not observed.head_only:
                return Decision(Action.RECOVER, observed.problem)
            return Decision(Action.FOLLOW, observed.problem or "")  # a wrong head alone is written again
        what = {
            Relation.BEHIND: f"the log in Redis went back from seq {ours.seq} to {seen.seq}",
            Relation.FORK: f"the log in Redis forked at seq {seen.seq}",
            Relation.OLDER_LOG: "Redis holds an older log than ours",
        }[relation]
        return Decision(Action.RECOVER, what)
    if observed.empty:
        return Decision(Action.GENESIS)
    if seen is None:
        return Decision(Action.REFUSE, f"the log in Redis does not verify: {observed.problem}")
    to_record: Relation | None = None
    if record is not None:
        to_record = relate(record.position, seen.position, previous=seen.previous, left=record.left)
        if to_record in (Relation.BEHIND, Relation.FORK, Relation.OLDER_LOG):
            return Decision(Action.REFUSE, (
                f"the log in Redis ({seen.position}) is older than this host's record of it"
                f" ({record.position}): a rollback, or a restored backup"
            ))
    if not allow_stale and now - seen.time > freshness:
        where_we_left_it = to_record is Relation.SAME and not lease_held
        if not where_we_left_it:
            known = "this host has no record of the log" if record is None else (
                "this host's record cannot tell it from an old copy put back while the live log moved on")
            return Decision(Action.REFUSE, (
                f"the newest event in Redis is {now - seen.time:.0f}s old and {known}: it may be a rolled-back copy"
            ))
    # What verified is current as far as this writer can tell: follow it; a problem left
    # (junk head, events deleted) is then repaired as by any writer holding the state.
    return Decision(Action.FOLLOW, observed.problem or "")

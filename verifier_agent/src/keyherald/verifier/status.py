"""What an agent reports about itself: for health endpoints, metrics and the operator's eyes.

Plain data, built on demand from the follower's and the validator's counters; ``as_dict()``
is JSON-ready. ``age`` is the issuer time of the last verified event (a heartbeat at least
every few seconds while the issuer lives) measured against the agent's clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["AgentStatus", "KeyStatus"]


@dataclass(frozen=True)
class KeyStatus:
    kid: str
    alg: str
    state: str


@dataclass(frozen=True)
class AgentStatus:
    issuer: str
    namespace: str
    bootstrapped: bool
    source: str
    """Where the state came from at start-up: ``redis``, ``cache`` (the cache file) or ``memory``."""
    connected: bool
    """Following Redis right now: the last command succeeded and the follower task is alive."""
    seq: int
    """The seq of the last event applied."""
    age: float | None
    """Seconds since the issuer time of the last verified event or heartbeat (None before bootstrap)."""
    stale: bool
    """Not fresh: no verified event for longer than ``freshness`` (a few heartbeat intervals),
    or not yet shown current since start-up. Events may be withheld from this agent: alert."""
    refusing: bool
    """Every token is refused now (``stale`` reason): ``age`` exceeds the staleness limit, or
    the state was never current."""
    max_staleness: float | None
    """The staleness limit in force, in seconds (inf: none); None while not yet current."""
    keys: tuple[KeyStatus, ...]
    revoked_tokens: int
    revoked_subjects: int
    refused_events: int
    """Envelopes refused: forged, tampered, malformed, spliced (``chain_broken``,
    ``other_log``), a log in Redis older than the cache file (``rollback``), checkpoints of an
    older log or a fork; a replayed old event of our log is ignored, not counted."""
    freshness: float = 0.0
    """Seconds without a verified event after which the agent reports ``stale``."""
    log: str = ""
    """Id of the log followed."""
    anchor: str = ""
    """Thumbprint of the control key the agent trusts now (its pin, or the key an anchor
    rotation moved it to)."""
    refused_by_reason: Mapping[str, int] = field(default_factory=dict)
    resyncs: int = 0
    resets: int = 0
    disconnects: int = 0
    reconnects: int = 0
    following: bool = False
    """The background follower task is running. False before start, after stop, for an agent
    fed in memory, and (which should never happen: it survives every error) if it died:
    then the agent validates from memory only, and ``connected`` is False too."""
    follow_failures: int = 0
    """Unexpected errors the follower survived (logged by type); non-zero deserves a look."""
    unknown_kid: int = 0
    """Tokens refused because their kid is not in the cache (verify never fetches keys)."""
    tokens: Mapping[str, int] = field(default_factory=dict)
    """The validator's counters: refusals by reason, cache hits and misses."""

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["refused_by_reason"] = dict(self.refused_by_reason)
        data["tokens"] = dict(self.tokens)
        return data

"""Start-up: which verified state an agent begins from, and whether it may trust it yet.

Redis is tried first: the checkpoint and the tail that chains to it. With ``cache_path``,
the agent's own signed memory is a **floor**: a state in Redis older than it (the same log
at an earlier seq, a fork, a log the agent left, an older log) is refused and counted
(``rollback``), and the agent starts from its memory instead. When Redis cannot be read at
all, the cache file serves too.

A verified state is not yet a current one: a genuine checkpoint recorded long ago is still
genuine. An agent accepts tokens only once its state is **current**: its newest event is
within the freshness bound (a few heartbeat intervals), as proven by the issuer's signed
heartbeats. Booting from its own cache file while Redis is unreachable counts as having
kept running: current while within the staleness limit. When Redis answers with something
that does not verify, or with a log older than the cache, the cache is loaded but not
current: that answer is the attacker's to choose, and an old memory must not turn it into
acceptance. Until current, every token is refused (``stale``), and
:meth:`VerifierAgent.start` waits, up to ``startup_timeout``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from redis.exceptions import RedisError

from keyherald.shared.clock import Clock
from keyherald.shared.errors import ProtocolError
from keyherald.shared.errors import WrongIssuer as ForeignLog
from keyherald.shared.lineage import Relation, freshness_bound, relate
from keyherald.shared.state import State

from .cachefile import CacheFileError, read_material
from .catchup import Candidate, MaterialError, from_material, from_redis
from .errors import BootstrapError
from .heap import release_freed
from .settings import VerifierSettings
from .signedstate import Material, SignedState, with_jtis
from .source import CheckpointTooLarge, LogSource, NoSnapshot

__all__ = ["Boot", "is_fresh"]

log = logging.getLogger("keyherald.verifier")


def is_fresh(state: State, now: float) -> bool:
    return now - state.time <= freshness_bound(state.heartbeat_interval)


class Boot:
    """One start-up attempt after another, until a state is loaded (see the module doc)."""

    def __init__(self, settings: VerifierSettings, signed: SignedState, source: LogSource, clock: Clock) -> None:
        self._settings = settings
        self._signed = signed
        self._source = source
        self._clock = clock
        self.why: str | None = None
        """Why the last attempt did not load anything (for the start-up timeout's message)."""
        self.cache_note = ""
        self.origin = "none"
        self._floor: Candidate | None = None
        self._floor_read = False

    def floor(self) -> Candidate | None:
        """The cache file's state, verified (read once)."""
        if self._floor_read:
            return self._floor
        self._floor_read = True
        path = self._settings.cache_path
        if path is None:
            return None
        try:
            self._floor = from_material(self._signed, read_material(Path(path)))
        except (CacheFileError, MaterialError) as exc:
            self.cache_note = f"; cache file {path} refused: {exc}"
            if not isinstance(exc, CacheFileError) or "no cache file" not in str(exc):
                log.error("cannot use the cache file %s: %s", path, exc)
        return self._floor

    async def attempt(self) -> bool:
        """Try once; True when a state is loaded. BootstrapError for what waiting cannot fix."""
        floor = self.floor()
        try:
            candidate = await from_redis(self._source, self._signed)
        except ForeignLog as exc:
            raise BootstrapError(
                f"namespace {self._settings.namespace!r} holds another issuer's log ({exc}); "
                "check KEYHERALD_ISSUER and KEYHERALD_NAMESPACE"
            ) from None
        except ProtocolError as exc:
            if exc.code == "unsupported_version":
                raise BootstrapError(f"{exc}") from None
            if exc.code == "anchor_chain":  # signed after an anchor rotation the pin cannot reach
                self.why = f"the checkpoint in Redis was refused (anchor_chain): {exc}"
                return self._from_floor(floor, unreachable=False)
            self.why = (
                f"the checkpoint in Redis was refused ({exc.code}): it does not verify with the "
                "trust anchor; check KEYHERALD_TRUST_ANCHOR, or whether someone else writes Redis"
            )
            return self._from_floor(floor, unreachable=False)
        except CheckpointTooLarge as exc:
            self.why = f"{exc} (refused unread)"
            return self._from_floor(floor, unreachable=False)
        except NoSnapshot as exc:
            self.why = f"{exc} (is the issuer running?)"
            return self._from_floor(floor, unreachable=False)
        except (RedisError, OSError) as exc:
            self.why = f"cannot reach Redis at KEYHERALD_REDIS_URL ({type(exc).__name__})"
            return self._from_floor(floor, unreachable=True)
        self._choose(candidate, floor)
        return True

    def _choose(self, candidate: Candidate, floor: Candidate | None) -> None:
        now = self._clock()
        if floor is not None:
            relation = relate(
                floor.state.position, candidate.state.position,
                previous=candidate.state.previous, left=floor.material.left,
            )
            if relation in (Relation.BEHIND, Relation.FORK, Relation.OLDER_LOG):
                self._signed.refused["rollback"] += 1
                log.warning(
                    "refused the log in Redis (%s at %.0f): older than this agent's cache file (%s at %.0f)",
                    candidate.state.position, candidate.state.time, floor.state.position, floor.state.time,
                )
                self._load(floor, current=False, origin="cache")  # current at the next fresh event
                return
            kept = with_jtis(floor.state.beyond(candidate.state), floor.material, candidate.state)
            candidate.state.absorb(floor.state)
            left = floor.material.left
            if relation is Relation.NEWER_LOG:
                left = (*left, floor.state.log)
            material = Material(candidate.material.snapshot, candidate.material.events, left, kept)
            candidate = Candidate(candidate.state, material, candidate.checkpoint_seq, candidate.problem)
        self._load(candidate, current=is_fresh(candidate.state, now), origin="redis")
        if not self._signed.keys.current:
            self.why = (
                f"the newest event in Redis is {now - candidate.state.time:.0f}s old (seq {candidate.state.seq}):"
                " the issuer is down, or the log was rolled back; the agent takes no token on it"
            )

    def _from_floor(self, floor: Candidate | None, *, unreachable: bool) -> bool:
        """Redis gave no verified state (unreachable, empty, junk or a forgery where the
        checkpoint should be): the agent's own memory serves, as if it had kept running."""
        if floor is None:
            return False
        now = self._clock()
        self._load(floor, current=unreachable and self._kept_running(floor.state, now), origin="cache")
        log.warning("booted from the cache file at seq %d: %s", floor.state.seq, self.why)
        return True

    def _kept_running(self, state: State, now: float) -> bool:
        """The agent's own memory counts as if it had kept running: current within the
        staleness limit (any age when there is none)."""
        staleness = self._settings.max_staleness
        if staleness is None:
            return True
        limit = (state.max_token_ttl or 300) + self._settings.leeway if staleness == "auto" else staleness
        return now - state.time <= limit

    def _load(self, candidate: Candidate, *, current: bool, origin: str) -> None:
        self._signed.load_state(candidate.state, candidate.material, current=current)
        self.origin = origin
        release_freed(len(candidate.material.snapshot))  # the checkpoint's parse is over

"""The agent's presence record: where it stands, said in Redis for the operator's fleet view.

Written by the follower between its reads, on its one connection (no second connection per
agent): when the applied seq changed (at most once a second) and otherwise every
``presence_interval``. Never on the ``verify`` path, and never read by anything that
validates a token (see :mod:`keyherald.shared.presence` for why it is advisory).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version

from keyherald.shared.names import Names
from keyherald.shared.presence import EXPIRE_INTERVALS, PresenceRecord

from .source import LogSource

__all__ = ["PresenceWriter", "default_agent_id"]

log = logging.getLogger("keyherald.verifier")

MIN_GAP = 1.0
"""Seconds between two writes prompted by a change of seq."""
PRUNE_EVERY = 600.0
PRUNE_AFTER = 3600.0
"""Index entries of agents silent this long are removed (their records expired long ago)."""


def default_agent_id() -> str:
    host = "".join(c if c.isalnum() or c in "._-" else "-" for c in socket.gethostname())[:64] or "host"
    return f"{host}:{os.getpid()}:{secrets.token_hex(3)}"


def _version() -> str:
    try:
        return version("keyherald-verifier")
    except PackageNotFoundError:
        return "unknown"


class PresenceWriter:
    """Decides when the record is due and writes it (SET with a TTL, and the index)."""

    def __init__(
        self, source: LogSource, names: Names, agent_id: str, interval: float,
        record: Callable[[], PresenceRecord], *, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._names = names
        self.agent_id = agent_id
        self.interval = interval
        self._record = record
        self._clock = clock
        self._written_at = float("-inf")
        self._written_seq: tuple[str, int] | None = None
        self._pruned_at = float("-inf")
        self.writes = 0
        self.failures = 0
        self.version = _version()

    def due_in(self, position: tuple[str, int]) -> float:
        """Seconds until the next write is due (0: now)."""
        now = self._clock()
        if position != self._written_seq:
            return max(0.0, self._written_at + MIN_GAP - now)
        return max(0.0, self._written_at + self.interval - now)

    async def maybe_write(self, position: tuple[str, int]) -> bool:
        if self.due_in(position) > 0:
            return False
        await self.write(position)
        return True

    async def write(self, position: tuple[str, int]) -> None:
        now = self._clock()
        record = self._record()
        ttl_ms = int(self.interval * EXPIRE_INTERVALS * 1000)
        commands: list[tuple[object, ...]] = [
            ("SET", self._names.presence(self.agent_id), record.model_dump_json(), "PX", ttl_ms),
            ("ZADD", self._names.presence_index, int(time.time() * 1000), self.agent_id),
        ]
        if now - self._pruned_at >= PRUNE_EVERY:
            commands.append(("ZREMRANGEBYSCORE", self._names.presence_index, "-inf",
                             int((time.time() - PRUNE_AFTER) * 1000)))
            self._pruned_at = now
        await self._source.pipeline(commands)
        self._written_at, self._written_seq = now, position
        self.writes += 1

    async def remove(self) -> None:
        """A clean stop: the agent leaves the fleet view at once rather than turning 'lost'."""
        await self._source.pipeline([
            ("DEL", self._names.presence(self.agent_id)),
            ("ZREM", self._names.presence_index, self.agent_id),
        ])

"""The leader's duty cycle: apply the lifecycle plan on schedule and fill silences with heartbeats.

Decisions live in :mod:`.lifecycle` as pure functions; this module only calls them on a
clock and commits what they say. Two leaders (a paused one that lost its lease) cannot
rotate twice: each commit re-decides on the state it appends to.
"""

from __future__ import annotations

from keyherald.shared.events import Event, EventType
from keyherald.shared.state import State

from . import lifecycle
from .context import FreshKeys, IssuerContext
from .eventlog import Draft

__all__ = ["Rotator"]


class Rotator:
    def __init__(self, ctx: IssuerContext) -> None:
        self._ctx = ctx

    async def tick(self) -> list[Event]:
        """Do whatever is due now; returns the events appended (often none)."""
        policy = self._ctx.policy

        def decide(state: State, now: float, fresh: FreshKeys) -> list[Draft]:
            return lifecycle.plan(state, now, policy, fresh)

        events = await self._ctx.commit_with_keys(decide)
        # Private keys of expired keys are deleted: nothing may sign with them again.
        expired = [str(e.data.get("kid")) for e in events if e.type == EventType.KEY_EXPIRED]
        await self._ctx.keystore.delete(*expired)
        return events

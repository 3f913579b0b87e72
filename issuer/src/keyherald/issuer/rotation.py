"""The leader's duty cycle: apply the lifecycle plan on schedule and fill silences with heartbeats.

Decisions live in :mod:`.lifecycle` as pure functions; this module only calls them on a
clock and commits what they say. Two leaders (a paused one that lost its lease) cannot
rotate twice: each commit re-decides on the state it appends to.
"""

from __future__ import annotations

from keyherald.shared.events import Event, EventType, KeyState
from keyherald.shared.state import State

from . import lifecycle
from .context import FreshKeys, IssuerContext
from .errors import DamagedBlob, KeyNotFound
from .eventlog import Draft

__all__ = ["Rotator"]


ORPHAN_AGE = 3600
"""A stored key no append announced within this long was made for a commit that lost."""
SWEEP_EVERY = 600


class Rotator:
    def __init__(self, ctx: IssuerContext) -> None:
        self._ctx = ctx
        self._swept_at = float("-inf")
        self._recoveries = 0
        self._lost: set[str] = set()
        self.recheck = False
        """Set when the private keys in Redis were found destroyed: which are lost is looked at again."""

    async def _lost_keys(self) -> set[str]:
        """After a new log was started (Redis lost data or held junk), or the store audit
        found the keys destroyed: put back the keys this process holds, and name the signing
        keys whose private half is gone, to be replaced (revoked, so that the standby takes
        over and a new one is published). Every usable key's private half is loaded, so the
        leader can put back all of them."""
        eventlog = self._ctx.log
        keystore = self._ctx.keystore
        if eventlog.recoveries != self._recoveries or self.recheck:
            self._recoveries, self.recheck = eventlog.recoveries, False
            await keystore.restore(self._ctx.control)
            state = await eventlog.sync()
            stored = await keystore.kids()
            self._lost = {k.kid for k in state.keys_in(KeyState.ACTIVE, KeyState.PUBLISHED) if k.kid not in stored}
        for record in (await eventlog.sync()).keys_in(KeyState.ACTIVE, KeyState.PUBLISHED):
            if record.kid not in self._lost:
                try:
                    await keystore.get(record.kid)  # cached after the first time
                except (KeyNotFound, DamagedBlob):
                    self._lost.add(record.kid)
        if self._lost:
            usable = {k.kid for k in (await eventlog.sync()).keys_in(KeyState.ACTIVE, KeyState.PUBLISHED)}
            self._lost &= usable
        return self._lost

    async def tick(self) -> list[Event]:
        """Do whatever is due now; returns the events appended (often none)."""
        policy = self._ctx.policy
        # Keys this writer saw revoked, and keys whose private half is lost: never to sign.
        revoked = {*self._ctx.log.revoked_kids, *await self._lost_keys()}

        def decide(state: State, now: float, fresh: FreshKeys) -> list[Draft]:
            return lifecycle.plan(state, now, policy, fresh, revoked=revoked)

        events = await self._ctx.commit_with_keys(decide)
        # Private keys of expired keys are deleted: nothing may sign with them again.
        expired = [str(e.data.get("kid")) for e in events if e.type == EventType.KEY_EXPIRED]
        await self._ctx.keystore.delete(*expired)
        now = self._ctx.clock()
        if now - self._swept_at >= SWEEP_EVERY:
            await self.sweep(now)
        return events

    async def sweep(self, now: float) -> list[str]:
        """Delete private keys that no state holds and that are too old to be an append in
        flight: keys of a commit that lost its race, or left by a crash before their delete."""
        self._swept_at = now
        state = await self._ctx.log.sync()
        made = await self._ctx.keystore.made_at()
        orphans = [kid for kid, at in made.items() if kid not in state.keys and at + ORPHAN_AGE < now]
        await self._ctx.keystore.delete(*orphans)
        return orphans

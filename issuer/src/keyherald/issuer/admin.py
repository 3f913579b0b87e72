"""Operator actions: rotate, revoke a key, a token or a subject, list keys.

The same class serves the ``keyherald`` command, the admin HTTP API and Python callers.
Each action appends signed events to the log and returns the seq of the last one.

    async with IssuerContext(IssuerSettings()) as ctx:
        admin = Admin(ctx)
        seq = await admin.revoke_subject("orders-service")
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from keyherald.shared.events import Event, EventType, KeyRecord
from keyherald.shared.state import State

from . import lifecycle
from .context import FreshKeys, IssuerContext
from .eventlog import Draft

__all__ = ["Admin"]


class Admin:
    def __init__(self, ctx: IssuerContext, *, on_commit: Callable[[], Awaitable[None]] | None = None) -> None:
        """``on_commit`` runs after each action that appended (a replica refreshes its signer)."""
        self._ctx = ctx
        self._on_commit = on_commit
        self.last_events: list[Event] = []
        """The events the last action appended (the command waits for a replica to witness them)."""

    async def keys(self) -> list[KeyRecord]:
        state = await self._ctx.log.read_state()
        return sorted(state.keys.values(), key=lambda k: (k.published_at, k.kid))

    async def state(self) -> State:
        return await self._ctx.log.read_state()

    async def _last_seq(self, events: list[Event], *, revokes: bool = False) -> int:
        """The seq to report; for an action that takes trust away (``revokes``), only once
        enough replicas hold it (NotReplicated otherwise: see :mod:`.durability`)."""
        self.last_events = events
        if not events:
            seq = (await self._ctx.log.sync()).seq
        else:
            if self._on_commit is not None:
                await self._on_commit()
            seq = events[-1].seq
        if revokes:  # also when nothing was appended (revoked already): the log may hold it alone
            await self._ctx.durability.confirm(seq)
        return seq

    async def rotate(self, *, emergency: bool = False) -> int:
        """Activate the standby now. ``emergency`` also revokes the key it replaces."""
        policy = self._ctx.policy

        def decide(state: State, now: float, fresh: FreshKeys) -> list[Draft]:
            active = state.active_key
            if emergency and active is not None:
                return lifecycle.revoke_key(state, active.kid, now, policy, fresh.pop())
            if lifecycle.standby(state) is None:
                return lifecycle.plan(state, now, policy, fresh)
            return lifecycle.rotate(state, now, policy, fresh.pop())

        return await self._last_seq(await self._ctx.commit_with_keys(decide), revokes=emergency)

    async def revoke_key(self, kid: str) -> int:
        """Revoke a key; an active one is replaced at once by the standby every agent holds."""
        policy = self._ctx.policy

        def decide(state: State, now: float, fresh: FreshKeys) -> list[Draft]:
            return lifecycle.revoke_key(state, kid, now, policy, fresh.pop())

        return await self._last_seq(await self._ctx.commit_with_keys(decide), revokes=True)

    async def revoke_token(self, jti: str, expires_at: int) -> int:
        """Revoke one token by its jti; ``expires_at`` (its exp) bounds how long it is remembered."""
        if not jti or len(jti) > 256:
            raise ValueError("jti must be 1-256 characters")

        ttl = self._ctx.policy.token_ttl

        def decide(state: State, now: float, fresh: FreshKeys) -> list[Draft]:
            # No token outlives now + the longest lifetime issued: a later expires_at would
            # only keep the entry in every agent's memory for nothing.
            until = min(int(expires_at), int(now) + max(ttl, state.max_token_ttl))
            return [(str(EventType.TOKEN_REVOKED), {"jti": jti, "expires_at": until})]

        return await self._last_seq(await self._ctx.commit_with_keys(decide), revokes=True)

    async def revoke_subject(self, sub: str) -> int:
        """Refuse every token issued to ``sub`` up to now, this second included."""
        if not sub or len(sub) > 256:
            raise ValueError("subject must be 1-256 characters")
        ttl = self._ctx.policy.token_ttl

        def decide(state: State, now: float, fresh: FreshKeys) -> list[Draft]:
            t = int(now)
            horizon = max(ttl, state.max_token_ttl)
            data = {"sub": sub, "revoked_at": t, "expires_at": t + horizon}
            return [(str(EventType.SUBJECT_REVOKED), data)]

        return await self._last_seq(await self._ctx.commit_with_keys(decide), revokes=True)

"""Operator actions: rotate, revoke a key, a token or a subject, list keys.

The same class serves the ``keyherald`` command, the admin HTTP API and Python callers.
Each action appends signed events to the log and returns the seq of the last one.

    async with IssuerContext(IssuerSettings()) as ctx:
        admin = Admin(ctx)
        seq = await admin.revoke_subject("orders-service")
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from redis.exceptions import RedisError

from keyherald.shared.events import Event, EventType, KeyRecord
from keyherald.shared.state import State

from . import lifecycle
from .context import FreshKeys, IssuerContext
from .eventlog import Draft

__all__ = ["BULK_BYTES", "Admin", "bulk_chunks"]

log = logging.getLogger("keyherald.issuer")

BULK_BYTES = 256 << 10
"""Data per ``tokens.revoked`` event: a quarter of the 1 MiB an agent reads."""


def bulk_chunks(tokens: Sequence[tuple[str, int]], last: int) -> list[dict[str, int]]:
    """jti -> end maps of at most BULK_BYTES of JSON each; an end is at most ``last`` (no
    token outlives now + the longest lifetime issued: a later end only costs memory)."""
    chunks: list[dict[str, int]] = []
    chunk: dict[str, int] = {}
    size = 0
    for jti, expires_at in tokens:
        end = min(int(expires_at), last)
        if jti in chunk:
            chunk[jti] = max(chunk[jti], end)
            continue
        cost = len(jti.encode()) * 2 + 16  # quoted, escaped at worst, and the number
        if chunk and size + cost > BULK_BYTES:
            chunks.append(chunk)
            chunk, size = {}, 0
        chunk[jti] = end
        size += cost
    if chunk:
        chunks.append(chunk)
    return chunks


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

    async def revoke_tokens(self, tokens: Sequence[tuple[str, int]]) -> int:
        """Revoke many tokens at once (an incident): ``tokens.revoked`` events of at most
        BULK_BYTES of data each, appended together; then a checkpoint, so that an agent
        starting or resyncing reads them in one document, not in thousands of events."""
        for jti, _ in tokens:
            if not jti or len(jti) > 256:
                raise ValueError("every jti must be 1-256 characters")
        if not tokens:
            raise ValueError("no token to revoke")
        ttl = self._ctx.policy.token_ttl

        def decide(state: State, now: float, fresh: FreshKeys) -> list[Draft]:
            last = int(now) + max(ttl, state.max_token_ttl)
            return [(str(EventType.TOKENS_REVOKED), {"tokens": chunk}) for chunk in bulk_chunks(tokens, last)]

        seq = await self._last_seq(await self._ctx.commit_with_keys(decide))
        try:
            await self._ctx.log.checkpoint(force=True)
        except RedisError as exc:  # the revocations are in the log: the leader checkpoints later
            log.warning("bulk revocation appended; its checkpoint was not written (%s)", type(exc).__name__)
        return seq

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

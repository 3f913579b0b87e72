"""The clients a replica may serve: each record as the signed log binds it, checked once.

Every token request reads the log's head, the client's record and the failure counters (one
MGET and one HGET, sent together). While the head is the one this replica's verified state
is at and the record is the very text checked before, nothing about the client has changed
(a client change is an append: the event, the head and the record move together), so that
check (the record parsed, its HMAC seal verified, its digest matched to the log's) serves as
it is. When the head has moved, the replica follows the log first (one sync, shared by the
requests waiting for it); a record that is not the text checked before is checked afresh.
So a change made by any writer takes effect on the next request of every replica, and what
Redis holds still decides: a record deleted, replaced or put back is judged as it is,
whatever this replica holds in memory.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from keyherald.shared.state import State

from ..clients import Client
from ..logreader import format_head, parse_head
from ..registry import bound_client

if TYPE_CHECKING:
    from ..runtime import IssuerRuntime

__all__ = ["ClientView"]

log = logging.getLogger("keyherald.issuer")


class ClientView:
    """``await view.client(client_id, head)``: the bound client, given the head read with it."""

    def __init__(self, runtime: IssuerRuntime) -> None:
        self._runtime = runtime
        self._known: dict[str, tuple[str, str, Client]] = {}
        """client_id -> (the digest the log binds, the record's text, the record parsed and
        checked: its seal and its digest)."""
        self._syncing: asyncio.Future[State] | None = None

    async def state_at(self, head: str | None) -> State:
        """The verified state, followed at least as far as ``head`` (as read from Redis)."""
        state = self._runtime.ctx.log.state
        if state is not None and head == format_head(state):
            return state
        state = await self._synced()
        claim = parse_head(head)
        if claim is not None and claim.log == state.log and claim.seq > state.seq:
            state = await self._synced(fresh=True)  # the sync joined began before that head
        return state

    async def _synced(self, *, fresh: bool = False) -> State:
        """One sync of the log for every request that needs it at the same time."""
        future = self._syncing
        if future is None or fresh:
            future = asyncio.ensure_future(self._runtime.ctx.log.sync())
            self._syncing = future
            future.add_done_callback(self._synced_done)
        return await asyncio.shield(future)

    def _synced_done(self, future: asyncio.Future[State]) -> None:
        if self._syncing is future:
            self._syncing = None
        if not future.cancelled():
            future.exception()  # retrieved: each waiter has raised it already

    def known(self, client_id: str, head: str | None, raw: str | None) -> Client | None:
        """The client, when that is known without reading anything more: the log has not
        moved since ``head`` was read, and ``raw`` (the record read with it) is the very text
        checked before and still the one the log binds."""
        state = self._runtime.ctx.log.state
        if state is None or head != format_head(state):
            return None
        known = self._known.get(client_id)
        if known is None or known[1] != raw or known[0] != state.client_record(client_id):
            return None
        return known[2]

    async def client(self, client_id: str, head: str | None, raw: str | None) -> Client | None:
        """The client ``client_id`` as the log binds it now, given its record as Redis holds it
        (read with ``head``); None when the record is absent, not sealed by us, or not the one
        the log binds."""
        state = await self.state_at(head)
        if raw is None:
            return None
        known = self._known.get(client_id)
        if known is not None and known[1] == raw and known[0] == state.client_record(client_id):
            return known[2]
        ctx = self._runtime.ctx
        client = bound_client(raw, ctx.client_seal, client_id, state)
        if client is None:
            # A record newer than our state (a change landed between the two reads): catch
            # up once, then decide.
            state = await self._synced(fresh=True)
            client = bound_client(raw, ctx.client_seal, client_id, state)
            if client is None:
                return None
        digest = state.client_record(client_id)
        if digest:
            self._known[client_id] = (digest, raw, client)
        return client

"""The client registry: every change a signed ``client.updated`` event, the record beside it.

A change to a client is one append: the event carrying the new record's digest, and the
record itself written to the clients hash by the same script, so the two never disagree.
Reading a client checks its tag (only the KEK's holder wrote it) and its digest against the
one the log holds for that client_id (it is the current record, not an old one put back).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from redis.asyncio import Redis

from keyherald.shared.clock import Clock, system_clock
from keyherald.shared.events import Event, EventType
from keyherald.shared.names import Names
from keyherald.shared.state import State

from .clients import (
    Client,
    Credentials,
    RecordSeal,
    new_secret,
    parse_client,
    record_digest,
    secret_fields,
    secret_matches,
    validate_audience,
    validate_client_id,
    validate_scope,
)
from .errors import ClientExists, ClientNotFound
from .eventlog import Change, Draft, EventLog, RetryAppend

__all__ = ["ClientRegistry", "bound_client"]

log = logging.getLogger("keyherald.issuer")

_Edit = Callable[[Client], Client]


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def bound_client(raw: str | bytes | None, seal: RecordSeal, client_id: str, state: State) -> Client | None:
    """The client a stored record holds if it is the one the log binds, else None."""
    if raw is None:
        return None
    expected = state.client_record(client_id)
    if not expected or record_digest(raw) != expected:
        if expected is None:
            return None
        log.warning("client record %r is not the one the log holds: ignored (was Redis written to?)", client_id)
        return None
    return parse_client(raw, seal, client_id)


def _updated(client_id: str, record: str | None) -> Draft:
    return str(EventType.CLIENT_UPDATED), {"client_id": client_id, "record": record_digest(record) if record else None}


class ClientRegistry:
    """Create, list, disable clients and rotate their secrets; every replica sees changes at once."""

    def __init__(
        self, redis: Redis, names: Names, *, seal: RecordSeal, log: EventLog, clock: Clock = system_clock
    ) -> None:
        self._redis = redis
        self._key = names.clients
        self._seal = seal
        self._log = log
        self._clock = clock
        self.last_events: list[Event] = []
        """The events the last change appended (the command waits for a replica to witness them)."""

    async def create(
        self,
        name: str,
        *,
        audiences: Iterable[str],
        scopes: Iterable[str] = (),
        ttl: int | None = None,
    ) -> Credentials:
        """Register ``name`` (its client_id); returns the only copy of its secret there will be."""
        client_id = validate_client_id(name)
        auds = _unique(validate_audience(a) for a in audiences)
        if not auds:
            raise ValueError("a client needs at least one audience (--audience)")
        scope_list = _unique(validate_scope(s) for s in scopes)
        if ttl is not None and int(ttl) < 1:
            raise ValueError("a client's token ttl must be at least 1s")
        now = int(self._clock())
        secret = new_secret()
        client = Client.model_validate({
            "client_id": client_id, "audiences": auds, "scopes": scope_list,
            "ttl": int(ttl) if ttl is not None else None, "disabled": False, "created_at": now,
            **secret_fields(secret, now),
        })
        record = self._seal.seal(client)
        stored = await self._redis.hget(self._key, client_id)

        async def mutation(state: State, at: float) -> Change:
            bound = state.client_record(client_id)
            if bound and stored is not None and record_digest(stored) == bound:
                raise ClientExists(f"a client named {client_id!r} exists already (rotate its secret instead)")
            if bound:  # the log names it but Redis lost (or someone destroyed) its record
                log.warning("client %r is in the log but its record is gone from Redis: created again", client_id)
            return Change([_updated(client_id, record)], {client_id: record})

        self.last_events = await self._log.commit(mutation)
        return Credentials(client, secret)

    async def get(self, client_id: str) -> Client | None:
        state = await self._log.sync()
        return bound_client(await self._redis.hget(self._key, client_id), self._seal, client_id, state)

    async def list(self) -> list[Client]:
        state = await self._log.sync()
        raw = await self._redis.hgetall(self._key)
        clients = (bound_client(value, self._seal, str(cid), state) for cid, value in raw.items())
        return sorted((c for c in clients if c is not None), key=lambda c: c.client_id)

    async def authenticate(self, client_id: str, secret: str) -> Client | None:
        """The client if ``secret`` is its current secret, else None (unknown or wrong alike)."""
        client = await self.get(client_id)
        return client if secret_matches(client, secret) else None

    async def disable(self, client_id: str) -> Client:
        """From now on the client gets no tokens; tokens it holds live on (revoke its subject)."""
        return await self._edit(client_id, lambda c: c.model_copy(update={"disabled": True}))

    async def enable(self, client_id: str) -> Client:
        return await self._edit(client_id, lambda c: c.model_copy(update={"disabled": False}))

    async def rotate_secret(self, client_id: str) -> Credentials:
        """A new secret; the old one stops working at once, on every replica."""
        secret = new_secret()
        now = int(self._clock())
        client = await self._edit(client_id, lambda c: c.model_copy(update=secret_fields(secret, now)))
        return Credentials(client, secret)

    async def delete(self, client_id: str) -> None:
        async def mutation(state: State, at: float) -> Change:
            if not state.client_record(client_id):
                raise ClientNotFound(f"no client {client_id!r}")
            return Change([_updated(client_id, None)], {client_id: None})

        self.last_events = await self._log.commit(mutation)

    async def _edit(self, client_id: str, edit: _Edit) -> Client:
        """Read the bound record, change it, append the change (retried if the log moved)."""
        result: list[Client] = []

        async def mutation(state: State, at: float) -> Change:
            seq, log_id = state.seq, state.log
            current = bound_client(await self._redis.hget(self._key, client_id), self._seal, client_id, state)
            if current is None:
                # A record newer than our state (another writer's change landed between our
                # read of the log and of the hash) is not an unknown client: catch up, retry.
                fresh = await self._log.sync()
                if fresh.seq != seq or fresh.log != log_id:
                    raise RetryAppend
                raise ClientNotFound(f"no client {client_id!r}")
            updated = edit(current)
            record = self._seal.seal(updated)
            result[:] = [updated]
            drafts: Sequence[Draft] = [_updated(client_id, record)]
            return Change(drafts, {client_id: record})

        self.last_events = await self._log.commit(mutation)
        return result[0]

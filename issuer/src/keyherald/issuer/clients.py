"""The client registry: who may ask the token endpoint for tokens, for which audiences and scopes.

Clients live in one Redis hash, ``Names(ns).clients``: client_id -> JSON record, shared by
every replica and by the ``keyherald clients`` command.

The client_id is the NAME the operator chose (``orders``), unique in the namespace. It is the
``sub`` of every token the client gets, so logs, audiences' access rules and
``keyherald revoke subject orders`` all read the same word; a random suffix would buy
nothing, since the secret is what authenticates.

Redis is not trusted here either: anyone who can write it (every agent host has its URL)
could otherwise register a client of their own with any audience and scope, admin included.
Every record carries an HMAC-SHA256 tag under a key derived from the KEK, bound to its
client_id; a record whose tag does not verify is treated as no client at all.

Secrets are 32 random bytes (``secrets.token_urlsafe``). With 256 bits of entropy a fast hash
is safe: nobody can guess a preimage, so a slow password hash (bcrypt, argon2) would only
cost every token request milliseconds. We keep SHA-256(salt || secret) with a random salt per
secret, compare in constant time (``hmac.compare_digest``) and never store, log or show the
secret after it is printed once.

    registry = ctx.clients()
    client, secret = await registry.create("orders", audiences=["inventory"], scopes=["inventory:read"])
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Callable, Iterable
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.asyncio import Redis
from redis.exceptions import WatchError

from keyherald.shared.clock import Clock, system_clock
from keyherald.shared.encoding import dumps
from keyherald.shared.names import Names

from .errors import ClientExists, ClientNotFound, IssuerError

__all__ = [
    "SECRET_PREFIX",
    "Client",
    "ClientRegistry",
    "Credentials",
    "RecordSeal",
    "hash_secret",
    "new_secret",
    "parse_client",
    "secret_matches",
    "validate_audience",
    "validate_client_id",
    "validate_scope",
]

log = logging.getLogger("keyherald.issuer")

SECRET_PREFIX = "khs_"
"""Marks keyherald secrets, so secret scanners (and people) recognise a leaked one."""

_CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,128}")  # RFC 6749 §3.3 scope-token
_DUMMY_SALT = secrets.token_bytes(16)
_DUMMY_HASH = hashlib.sha256(_DUMMY_SALT + b"no such client").hexdigest()


def validate_client_id(value: str) -> str:
    if not _CLIENT_ID.fullmatch(value):
        raise ValueError("a client name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return value


def validate_audience(value: str) -> str:
    if not value or len(value) > 256 or not value.isprintable() or " " in value:
        raise ValueError(f"audience {value!r} must be 1-256 printable characters without spaces")
    return value


def validate_scope(value: str) -> str:
    if not _SCOPE.fullmatch(value):
        raise ValueError(f"scope {value!r} is not an RFC 6749 scope token (no spaces, quotes or backslashes)")
    return value


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str, salt: bytes) -> str:
    return hashlib.sha256(salt + secret.encode("utf-8", "surrogatepass")).hexdigest()


class Client(BaseModel):
    """A registered client as stored; the secret itself is never here, only its salted hash."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    client_id: str
    audiences: tuple[str, ...]
    scopes: tuple[str, ...] = ()
    ttl: int | None = Field(default=None, ge=1)
    """Lifetime of its tokens in seconds; the issuer's token_ttl caps it. None: token_ttl."""
    disabled: bool = False
    created_at: int
    secret_salt: str
    secret_hash: str
    secret_rotated_at: int
    mac: str = ""
    """HMAC of every other field under the registry's key (see RecordSeal)."""

    def public(self) -> dict[str, object]:
        """What may be shown to an operator: everything but the secret's hash and salt."""
        return self.model_dump(mode="json", exclude={"secret_salt", "secret_hash", "mac"})


class RecordSeal:
    """Tags client records so that only the issuer (which holds the KEK) can write them."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = key

    def tag(self, client: Client) -> str:
        body = dumps(client.model_dump(mode="json", exclude={"mac"}))
        return hmac.new(self._key, body, hashlib.sha256).hexdigest()

    def seal(self, client: Client) -> str:
        """The record as stored: its JSON with the tag."""
        return client.model_copy(update={"mac": self.tag(client)}).model_dump_json()

    def verifies(self, client: Client) -> bool:
        return hmac.compare_digest(self.tag(client), client.mac)

    def __repr__(self) -> str:
        return "RecordSeal(<hidden>)"


class Credentials(NamedTuple):
    client: Client
    secret: str


def parse_client(raw: str | bytes | None, seal: RecordSeal, client_id: str | None = None) -> Client | None:
    """The client a stored record holds, or None: absent, malformed, not written by us, or
    (with ``client_id``) stored under another id than its own."""
    if raw is None:
        return None
    try:
        client = Client.model_validate_json(raw)
    except ValidationError:
        return None
    if client_id is not None and client.client_id != client_id:
        return None
    if not seal.verifies(client):
        log.warning("client record %r fails its integrity check: ignored (was Redis written to?)", client.client_id)
        return None
    return client


def secret_matches(client: Client | None, secret: str) -> bool:
    """Constant-time check; an unknown client costs the same hash and compare as a known one."""
    if client is None:
        salt, expected = _DUMMY_SALT, _DUMMY_HASH
    else:
        try:
            salt, expected = bytes.fromhex(client.secret_salt), client.secret_hash
        except ValueError:
            salt, expected = _DUMMY_SALT, _DUMMY_HASH
    ok = hmac.compare_digest(hash_secret(secret, salt), expected)
    return ok and client is not None


def _secret_fields(secret: str, now: int) -> dict[str, object]:
    salt = secrets.token_bytes(16)
    return {"secret_salt": salt.hex(), "secret_hash": hash_secret(secret, salt), "secret_rotated_at": now}


_Change = Callable[[Client], Client]


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


class ClientRegistry:
    """Create, list, disable clients and rotate their secrets; every replica sees changes at once."""

    def __init__(self, redis: Redis, names: Names, *, seal: RecordSeal, clock: Clock = system_clock) -> None:
        self._redis = redis
        self._key = names.clients
        self._seal = seal
        self._clock = clock

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
            **_secret_fields(secret, now),
        })
        if not await self._redis.hsetnx(self._key, client_id, self._seal.seal(client)):
            raise ClientExists(f"a client named {client_id!r} exists already (rotate its secret instead)")
        return Credentials(client, secret)

    async def get(self, client_id: str) -> Client | None:
        return parse_client(await self._redis.hget(self._key, client_id), self._seal, client_id)

    async def list(self) -> list[Client]:
        raw = await self._redis.hgetall(self._key)
        clients = (parse_client(value, self._seal, str(cid)) for cid, value in raw.items())
        return sorted((c for c in clients if c is not None), key=lambda c: c.client_id)

    async def authenticate(self, client_id: str, secret: str) -> Client | None:
        """The client if ``secret`` is its current secret, else None (unknown or wrong alike)."""
        client = await self.get(client_id)
        return client if secret_matches(client, secret) else None

    async def disable(self, client_id: str) -> Client:
        """From now on the client gets no tokens; tokens it holds live on (revoke its subject)."""
        return await self._update(client_id, lambda c: c.model_copy(update={"disabled": True}))

    async def enable(self, client_id: str) -> Client:
        return await self._update(client_id, lambda c: c.model_copy(update={"disabled": False}))

    async def rotate_secret(self, client_id: str) -> Credentials:
        """A new secret; the old one stops working at once, on every replica."""
        secret = new_secret()
        now = int(self._clock())
        client = await self._update(client_id, lambda c: c.model_copy(update=_secret_fields(secret, now)))
        return Credentials(client, secret)

    async def delete(self, client_id: str) -> None:
        if not await self._redis.hdel(self._key, client_id):
            raise ClientNotFound(f"no client {client_id!r}")

    async def _update(self, client_id: str, change: _Change) -> Client:
        """Read, change, write back, retried if another writer touched the hash meanwhile."""
        async with self._redis.pipeline(transaction=True) as pipe:
            for _ in range(50):
                try:
                    await pipe.watch(self._key)
                    current = parse_client(await pipe.hget(self._key, client_id), self._seal, client_id)
                    if current is None:
                        raise ClientNotFound(f"no client {client_id!r}")
                    updated = change(current)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.hset(self._key, client_id, self._seal.seal(updated))
                    await pipe.execute()
                    return updated
                except WatchError:
                    continue
                finally:
                    await pipe.reset()  # type: ignore[no-untyped-call]
        raise IssuerError(f"client {client_id!r} stayed contended; try again")


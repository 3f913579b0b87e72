"""The client registry: who may ask the token endpoint for tokens, for which audiences and scopes.

Clients live in one Redis hash, ``Names(ns).clients``: client_id -> JSON record, shared by
every replica and by the ``keyherald clients`` command (:mod:`.registry` changes them).

The client_id is the NAME the operator chose (``orders``), unique in the namespace. It is the
``sub`` of every token the client gets, so logs, audiences' access rules and
``keyherald revoke subject orders`` all read the same word; a random suffix would buy
nothing, since the secret is what authenticates.

Redis is not trusted here either: anyone who can write it (every agent host has its URL)
could otherwise register a client of their own with any audience and scope, admin included.
Every record carries an HMAC-SHA256 tag under a key derived from the KEK, bound to its
client_id; a record whose tag does not verify is treated as no client at all. And a tag
alone cannot tell an old record from the current one: put back after a secret rotation, an
old record would bring the leaked secret back. So every change is a ``client.updated``
event in the signed log carrying the record's digest (:func:`record_digest`), and a record
whose digest is not the one the log holds for its client_id is no client either.

Secrets are 32 random bytes (``secrets.token_urlsafe``). With 256 bits of entropy a fast hash
is safe: nobody can guess a preimage, so a slow password hash (bcrypt, argon2) would only
cost every token request milliseconds. We keep SHA-256(salt || secret) with a random salt per
secret, compare in constant time (``hmac.compare_digest``) and never store, log or show the
secret after it is printed once.

    registry = ctx.clients()
    client, secret = await registry.create("orders", audiences=["inventory"], scopes=["inventory:read"])
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from keyherald.shared.encoding import dumps

__all__ = [
    "SECRET_PREFIX",
    "Client",
    "Credentials",
    "RecordSeal",
    "hash_secret",
    "new_secret",
    "parse_client",
    "record_digest",
    "secret_fields",
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


def record_digest(raw: str | bytes) -> str:
    """What the log binds a stored record by: SHA-256 of its exact bytes, base64url."""
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")


def secret_fields(secret: str, now: int) -> dict[str, object]:
    salt = secrets.token_bytes(16)
    return {"secret_salt": salt.hex(), "secret_hash": hash_secret(secret, salt), "secret_rotated_at": now}

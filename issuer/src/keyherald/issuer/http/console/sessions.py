"""Console sessions: kept in Redis, sealed under the KEK, found by the hash of their id.

The cookie holds only a random 256-bit session id. Redis holds, under the id's SHA-256, who
signed in, how (admin client credentials or an admin token), the session's CSRF token and its
times, with an HMAC under a key derived from the KEK. So every replica (and every worker of
one) serves the same session, and:

- reading Redis gives no cookie (only hashes) and no way to act: the CSRF token alone is
  useless without the id;
- writing Redis cannot make a session: a record without the right HMAC is no session (whoever
  can write Redis must not gain the power to sign events through the console);
- what a Redis writer can still do is delete sessions (sign operators out) or put back a
  record it read earlier, which revives a session only for whoever holds its id, and only
  until its absolute end (``expires``, inside the sealed record).

A session ends after ``KEYHERALD_CONSOLE_IDLE_TIMEOUT`` unused (the key's TTL, and the sealed
``seen`` time), after ``MAX_AGE`` at most (or the admin token's exp), at sign-out, and when the
person behind it loses the admin scope (checked on every request, :mod:`.access`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import asdict, dataclass, replace
from typing import Literal

from redis.asyncio import Redis

from keyherald.shared.clock import Clock
from keyherald.shared.encoding import dumps
from keyherald.shared.names import Names

__all__ = ["MAX_AGE", "Session", "SessionStore", "new_session_id"]

MAX_AGE = 12 * 3600.0
"""The longest a session lasts, however busy: a shift."""
TOUCH_EVERY = 15.0
"""A session's idle clock is pushed back at most this often (one write per request is waste)."""


def new_session_id() -> str:
    return secrets.token_urlsafe(32)


def credential_of(secret_salt: str, secret_hash: str) -> str:
    """What a session keeps of the secret it was opened with: a digest of its stored hash."""
    return hashlib.sha256(f"{secret_salt}:{secret_hash}".encode()).hexdigest()[:32]


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Session:
    principal: str
    """The client_id that signed in, or the ``sub`` of the admin token used."""
    kind: Literal["client", "token"]
    csrf: str
    created: float
    seen: float
    expires: float
    jti: str = ""
    """The admin token's jti (kind "token"): revoking that token ends the session too."""
    kid: str = ""
    """The key that signed the admin token (kind "token"): revoking that key ends it too."""
    credential: str = ""
    """A digest of the client's secret record at sign-in (kind "client"): rotating the secret
    ends every session opened with the old one, as it ends the old secret's tokens."""


class SessionStore:
    def __init__(self, redis: Redis, names: Names, key: bytes, clock: Clock, idle: float) -> None:
        self._redis, self._names, self._key, self._clock, self.idle = redis, names, key, clock, idle

    def _tag(self, digest: str, body: dict[str, object]) -> str:
        return hmac.new(self._key, digest.encode() + b"\n" + dumps(body), hashlib.sha256).hexdigest()

    async def _write(self, digest: str, session: Session, *, new: bool) -> None:
        """``new``: create the record (never over another); else refresh it only if it is
        still there, so a request racing a sign-out cannot write the ended session back."""
        body = asdict(session)
        record = json.dumps({**body, "mac": self._tag(digest, body)}, separators=(",", ":"))
        ttl = max(1, int(min(self.idle, session.expires - self._clock()) + 1))
        await self._redis.set(self._names.console_session(digest), record, ex=ttl, nx=new, xx=not new)

    async def create(self, principal: str, kind: Literal["client", "token"], *, expires: float | None = None,
                     jti: str = "", kid: str = "", credential: str = "") -> tuple[str, Session]:
        """A new session; returns its id (for the cookie, never stored) and the session."""
        now = self._clock()
        end = min(now + MAX_AGE, expires) if expires is not None else now + MAX_AGE
        session = Session(principal, kind, secrets.token_urlsafe(32), now, now, end, jti, kid, credential)
        session_id = new_session_id()
        await self._write(_digest(session_id), session, new=True)
        return session_id, session

    async def get(self, session_id: str | None) -> Session | None:
        """The live session this id opens, its idle clock pushed back; None when there is none:
        unknown, ended, or a record not sealed by an issuer of this namespace."""
        if not session_id or len(session_id) > 128:
            return None
        digest = _digest(session_id)
        raw = await self._redis.get(self._names.console_session(digest))
        session = self._opened(digest, raw)
        if session is None:
            return None
        now = self._clock()
        if now - session.seen > self.idle or now >= session.expires:
            await self._redis.delete(self._names.console_session(digest))
            return None
        if now - session.seen >= TOUCH_EVERY:
            session = replace(session, seen=now)
            await self._write(digest, session, new=False)
        return session

    def _opened(self, digest: str, raw: object) -> Session | None:
        if not isinstance(raw, str | bytes):
            return None
        try:
            doc = json.loads(raw)
            mac = doc.pop("mac")
            session = Session(**doc)
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
        if not isinstance(mac, str) or not hmac.compare_digest(mac, self._tag(digest, asdict(session))):
            return None
        return session

    async def end(self, session_id: str | None) -> None:
        if session_id and len(session_id) <= 128:
            await self._redis.delete(self._names.console_session(_digest(session_id)))

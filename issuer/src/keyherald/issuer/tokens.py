"""Signing tokens with the active key (the token endpoint, tests), and recognising a token this
issuer signed (revocation by the token itself: RFC 7009, the admin API, the command)."""

from __future__ import annotations

import json
from typing import Any

from keyherald.shared.encoding import b64url_encode, dumps, loads_object
from keyherald.shared.jwk import SigningKey, VerifyingKey
from keyherald.shared.jws import parse_compact, sign_compact
from keyherald.shared.state import State

from .context import IssuerContext
from .errors import KeyNotFound

__all__ = ["MAX_TOKEN", "TOKEN_TYP", "TokenSigner", "sign_token", "verified_claims"]

TOKEN_TYP = "at+jwt"
MAX_TOKEN = 8 * 1024
_CLAIMS = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False)
"""What :func:`keyherald.shared.encoding.dumps` writes, without building an encoder per call."""


def sign_token(claims: dict[str, Any], key: SigningKey) -> str:
    """A compact JWS of ``claims`` with header alg and kid from ``key`` and typ ``at+jwt``."""
    return sign_compact({"typ": TOKEN_TYP}, dumps(claims), key)


class TokenSigner:
    """Keeps the active private key at hand; the runtime calls :meth:`refresh` on every new
    log entry (and on each duty tick), so signing never reads Redis on the request path."""

    def __init__(self, ctx: IssuerContext) -> None:
        self._ctx = ctx
        self._key: SigningKey | None = None
        self._head = ""
        """The key's protected header, encoded once: the same for every token it signs."""
        self._seq: tuple[str, int] = ("", -1)

    @property
    def kid(self) -> str | None:
        return self._key.kid if self._key else None

    async def refresh(self) -> None:
        """Pick up the active key of the current verified state (cheap when nothing moved).

        A key this issuer ever saw revoked is never used, whatever the log in Redis says (a
        rolled-back log may show it active again): until the leader revokes it again, no key."""
        state = await self._ctx.log.sync()
        marker = (state.log, state.seq)
        if marker == self._seq:
            return
        active = state.active_key
        if active is not None and active.kid in self._ctx.log.revoked_kids:
            active = None
        key = await self._ctx.keystore.get(active.kid) if active else None
        if key is not None:
            self._head = b64url_encode(dumps({"typ": TOKEN_TYP, "alg": key.alg, "kid": key.kid}))
        self._key = key
        self._seq = marker

    def sign_now(self, payload: str) -> str | None:
        """A token of ``payload`` (the claims' JSON) with the key at hand; None when there is
        none yet (:meth:`sign` looks for it)."""
        key = self._key
        if key is None:
            return None
        signing_input = f"{self._head}.{b64url_encode(payload.encode())}"
        return f"{signing_input}.{b64url_encode(key.sign(signing_input.encode('ascii')))}"

    async def sign(self, claims: dict[str, Any] | str) -> str:
        """What :func:`sign_token` gives, with the header and the JSON encoder prepared;
        ``claims`` may come as their JSON already (as :func:`dumps` writes it)."""
        key = self._key
        if key is None:
            await self.refresh()
            key = self._key
        if key is None:
            raise KeyNotFound("no active signing key yet: is an issuer leader running?")
        payload = claims if isinstance(claims, str) else _CLAIMS.encode(claims)
        signing_input = f"{self._head}.{b64url_encode(payload.encode())}"
        return f"{signing_input}.{b64url_encode(key.sign(signing_input.encode('ascii')))}"


def verified_claims(token: str, state: State, issuer: str) -> dict[str, Any] | None:
    """The claims of a token this issuer signed with a key it still knows, else None."""
    try:
        jws = parse_compact(token, max_length=MAX_TOKEN)
        header = jws.header
        record = state.keys.get(str(header.get("kid")))
        if record is None or header.get("typ") != TOKEN_TYP or "crit" in header:
            return None
        key = VerifyingKey.from_jwk(record.jwk)
        if header.get("alg") != key.alg or not key.verify(jws.signing_input, jws.signature):
            return None
        claims = loads_object(jws.payload)
    except (ValueError, TypeError):
        return None
    return claims if claims.get("iss") == issuer else None

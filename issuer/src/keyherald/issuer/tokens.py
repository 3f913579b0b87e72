"""Signing tokens with the active key: the one function the token endpoint and tests call."""

from __future__ import annotations

from typing import Any

from keyherald.shared.encoding import dumps
from keyherald.shared.jwk import SigningKey
from keyherald.shared.jws import sign_compact

from .context import IssuerContext
from .errors import KeyNotFound

__all__ = ["TOKEN_TYP", "TokenSigner", "sign_token"]

TOKEN_TYP = "at+jwt"


def sign_token(claims: dict[str, Any], key: SigningKey) -> str:
    """A compact JWS of ``claims`` with header alg and kid from ``key`` and typ ``at+jwt``."""
    return sign_compact({"typ": TOKEN_TYP}, dumps(claims), key)


class TokenSigner:
    """Keeps the active private key at hand; the runtime calls :meth:`refresh` on every new
    log entry (and on each duty tick), so signing never reads Redis on the request path."""

    def __init__(self, ctx: IssuerContext) -> None:
        self._ctx = ctx
        self._key: SigningKey | None = None
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
        self._key = await self._ctx.keystore.get(active.kid) if active else None
        self._seq = marker

    async def sign(self, claims: dict[str, Any]) -> str:
        if self._key is None:
            await self.refresh()
        if self._key is None:
            raise KeyNotFound("no active signing key yet: is an issuer leader running?")
        return sign_token(claims, self._key)

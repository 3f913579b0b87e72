"""Signing tokens with the active key: the one function the token endpoint and tests call."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from redis.exceptions import RedisError

from keyherald.shared.encoding import dumps
from keyherald.shared.jwk import SigningKey
from keyherald.shared.jws import sign_compact
from keyherald.shared.names import stream_id

from .context import IssuerContext
from .errors import KeyNotFound

__all__ = ["TOKEN_TYP", "TokenSigner", "sign_token"]

TOKEN_TYP = "at+jwt"
log = logging.getLogger("keyherald.issuer")


def sign_token(claims: dict[str, Any], key: SigningKey) -> str:
    """A compact JWS of ``claims`` with header alg and kid from ``key`` and typ ``at+jwt``."""
    return sign_compact({"typ": TOKEN_TYP}, dumps(claims), key)


class TokenSigner:
    """Keeps the active private key at hand and follows the log to switch at each rotation."""

    def __init__(self, ctx: IssuerContext) -> None:
        self._ctx = ctx
        self._key: SigningKey | None = None
        self._seq = -1
        self._follow: asyncio.Task[None] | None = None

    @property
    def kid(self) -> str | None:
        return self._key.kid if self._key else None

    async def refresh(self) -> None:
        state = await self._ctx.log.read_state()
        if state.seq == self._seq:
            return
        active = state.active_key
        self._key = await self._ctx.keystore.get(active.kid) if active else None
        self._seq = state.seq

    async def sign(self, claims: dict[str, Any]) -> str:
        if self._key is None or self._follow is None:
            await self.refresh()
        if self._key is None:
            raise KeyNotFound("no active signing key yet: is an issuer leader running?")
        return sign_token(claims, self._key)

    async def start(self) -> None:
        await self.refresh()
        self._follow = asyncio.create_task(self._run(), name="keyherald-signer-follow")

    async def stop(self) -> None:
        if self._follow is not None:
            self._follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow
            self._follow = None

    async def _run(self) -> None:
        """Block on the stream; any new entry means the state moved."""
        redis, stream = self._ctx.redis, self._ctx.names.events
        while True:
            try:
                last = stream_id(self._seq) if self._seq > 0 else "0-0"
                if await redis.xread({stream: last}, count=1, block=1000):
                    await self.refresh()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("signer lost Redis (%s); retrying", type(exc).__name__)
                await asyncio.sleep(1)

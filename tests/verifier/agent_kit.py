"""Helpers for the agent's tests: an issuer at genesis, tokens from its active key, a running agent.

Plain functions rather than fixtures, so that this file and the validator's kit never
fight over a shared conftest.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from keyherald.issuer.context import IssuerContext
from keyherald.issuer.rotation import Rotator
from keyherald.issuer.tokens import sign_token
from keyherald.shared.clock import ManualClock
from keyherald.verifier import VerifierAgent, VerifierSettings

AUDIENCE = "orders"


async def genesis(ctx: IssuerContext) -> None:
    await Rotator(ctx).tick()


def settings_for(ctx: IssuerContext, **overrides: Any) -> VerifierSettings:
    values: dict[str, Any] = {
        "redis_url": ctx.settings.redis_url,
        "namespace": ctx.settings.namespace,
        "issuer": ctx.settings.issuer,
        "audience": AUDIENCE,
        "trust_anchor": ctx.control.anchor.thumbprint,
        "startup_timeout": "5s",
    }
    values.update(overrides)
    return VerifierSettings(**values)


@asynccontextmanager
async def running_agent(ctx: IssuerContext, clock: ManualClock, **overrides: Any) -> AsyncIterator[VerifierAgent]:
    async with VerifierAgent(settings_for(ctx, **overrides), clock=clock) as agent:
        yield agent


async def mint(
    ctx: IssuerContext,
    clock: ManualClock,
    *,
    kid: str | None = None,
    sub: str = "billing-service",
    aud: str | list[str] = AUDIENCE,
    ttl: int = 300,
    jti: str | None = None,
    **extra: Any,
) -> str:
    """A token as the issuer's token endpoint would sign it, with the active key by default."""
    state = await ctx.log.read_state()
    if kid is None:
        assert state.active_key is not None
        kid = state.active_key.kid
    key = await ctx.keystore.get(kid)
    now = int(clock())
    claims = {
        "iss": ctx.settings.issuer, "sub": sub, "aud": aud, "iat": now, "nbf": now,
        "exp": now + ttl, "jti": jti or uuid.uuid4().hex, "client_id": sub, **extra,
    }
    return sign_token(claims, key)


async def eventually(check: Callable[[], bool], *, within: float = 1.0, what: str = "condition") -> float:
    """Poll ``check`` (real time: network propagation is the point) until true; return the wait."""
    start = time.monotonic()
    deadline = start + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {within}s")
        await asyncio.sleep(0.005)
    return time.monotonic() - start


def refuses(agent: VerifierAgent, token: str) -> str | None:
    """The refusal reason, or None when the token is accepted."""
    from keyherald.verifier import InvalidToken

    try:
        agent.verify(token)
    except InvalidToken as exc:
        return exc.reason
    return None

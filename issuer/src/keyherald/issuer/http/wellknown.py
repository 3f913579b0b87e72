"""GET /.well-known/jwks.json and GET /.well-known/oauth-authorization-server (RFC 8414).

The JWKS lets any standard JWT library verify keyherald tokens without the agent (it then
misses what only the agent knows: revocations of tokens and subjects, the key's signing
window). It holds every key a verifier may need now: the published standby, the active
key and retired keys whose tokens may still be valid; never a revoked key.

Its max-age: the set changes at a rotation, so a copy is good until the standby activates
(it is already in the copy, so tokens signed after that rotation still verify). Capped at
min(token_ttl, 5 minutes): a revoked key leaves the set at once, and a cache that outlived
that would keep trusting the key; tokens of a revoked key live at most token_ttl anyway.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from keyherald.shared.events import KeyState
from keyherald.shared.state import State

from ..lifecycle import standby

if TYPE_CHECKING:
    from . import Service

__all__ = ["JWKS_MAX_AGE_CAP", "jwks_body", "jwks_endpoint", "jwks_max_age", "metadata", "metadata_endpoint"]

JWKS_MAX_AGE_CAP = 300


def jwks_body(state: State, now: float) -> dict[str, Any]:
    keys = [
        record.jwk for record in state.keys_in(KeyState.PUBLISHED, KeyState.ACTIVE, KeyState.RETIRED)
        if record.expires_at is None or record.expires_at > now
    ]
    return {"keys": keys}


def jwks_max_age(state: State, now: float, *, token_ttl: float, rotation_period: float) -> int:
    nxt = standby(state)
    until_rotation = (nxt.activates_at - now) if nxt and nxt.activates_at else rotation_period
    return max(0, math.floor(min(until_rotation, token_ttl, rotation_period, JWKS_MAX_AGE_CAP)))


def metadata(issuer: str) -> dict[str, Any]:
    base = issuer.rstrip("/")
    methods = ["client_secret_basic", "client_secret_post"]
    return {
        "issuer": issuer,
        "token_endpoint": f"{base}/token",
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "revocation_endpoint": f"{base}/revoke",
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": [],  # no authorization endpoint: client credentials only
        "token_endpoint_auth_methods_supported": methods,
        "revocation_endpoint_auth_methods_supported": methods,
        "service_documentation": f"{base}/docs",
    }


async def jwks_endpoint(service: Service) -> Response:
    async with service.redis_slots:
        state = await service.state_or_last()
    now = service.clock()
    s = service.settings
    max_age = jwks_max_age(state, now, token_ttl=s.token_ttl, rotation_period=s.rotation_period)
    # stale-if-error (RFC 5861): a cache may keep serving these keys while we cannot answer.
    cache_control = f"public, max-age={max_age}, stale-if-error={int(s.token_ttl)}"
    return service.json(
        jwks_body(state, now), headers={"Cache-Control": cache_control},
        media_type="application/jwk-set+json",
    )


async def metadata_endpoint(service: Service) -> Response:
    return service.json(metadata(service.settings.issuer), headers={"Cache-Control": "public, max-age=3600"})

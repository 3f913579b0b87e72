"""GET /.well-known/jwks.json and GET /.well-known/oauth-authorization-server (RFC 8414).

The JWKS lets any standard JWT library verify keyherald tokens without the agent (it then
misses what only the agent knows: revocations of tokens and subjects, the key's signing
window). It holds every key a verifier may need now: the published standby, the active
key and retired keys whose tokens may still be valid; never a revoked key.

Its max-age: the set changes at a rotation, so a copy is good until the standby activates
(it is already in the copy, so tokens signed after that rotation still verify). Capped at
min(token_ttl, 5 minutes) for the caches that honour it; many JWT libraries keep their own
copy for longer whatever it says (docs/api.md gives their settings). A strong ETag lets a
cache revalidate for the price of a 304.

The metadata: RFC 8414 makes ``response_types_supported`` REQUIRED and §3.2 forbids an empty
array, so a server with no authorization endpoint can satisfy both only by naming a value;
``none`` (OAuth 2.0 Multiple Response Type Encoding Practices) is the one that hands out
nothing. ``scopes_supported`` lists the one scope the issuer itself gives a meaning to; the
registry's scopes are each operator's own and are not published to anonymous callers (RFC
8414 §2 lets a server leave values out).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from keyherald.shared.encoding import b64url_encode
from keyherald.shared.events import KeyState
from keyherald.shared.state import State

from ..lifecycle import standby

if TYPE_CHECKING:
    from . import Service

__all__ = [
    "JWKS_MAX_AGE_CAP",
    "entity_tag",
    "jwks_body",
    "jwks_endpoint",
    "jwks_max_age",
    "metadata",
    "metadata_endpoint",
    "none_match",
]

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


def metadata(issuer: str, *, admin_scope: str) -> dict[str, Any]:
    base = issuer.rstrip("/")
    methods = ["client_secret_basic", "client_secret_post"]
    return {
        "issuer": issuer,
        "token_endpoint": f"{base}/token",
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "revocation_endpoint": f"{base}/revoke",
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": ["none"],  # REQUIRED and never empty; no authorization endpoint
        "scopes_supported": [admin_scope],
        "token_endpoint_auth_methods_supported": methods,
        "revocation_endpoint_auth_methods_supported": methods,
        "service_documentation": f"{base}/docs",
    }


def entity_tag(content: bytes) -> str:
    """A strong ETag: the same bytes, the same tag, on every replica."""
    return '"' + b64url_encode(hashlib.sha256(content).digest()[:18]) + '"'


def none_match(header: str | None, tag: str) -> bool:
    """Whether If-None-Match names ``tag`` (weak comparison, RFC 9110 §13.1.2) or is ``*``."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    return any(candidate.strip().removeprefix("W/") == tag for candidate in header.split(","))


async def jwks_endpoint(service: Service, request: Request) -> Response:
    async with service.redis_slots:
        state = await service.state_or_last()
    now = service.clock()
    s = service.settings
    max_age = jwks_max_age(state, now, token_ttl=s.token_ttl, rotation_period=s.rotation_period)
    content = json.dumps(jwks_body(state, now), separators=(",", ":")).encode()
    tag = entity_tag(content)
    # stale-if-error (RFC 5861): a cache may keep serving these keys while we cannot answer.
    headers = {"Cache-Control": f"public, max-age={max_age}, stale-if-error={int(s.token_ttl)}", "ETag": tag}
    if none_match(request.headers.get("if-none-match"), tag):
        return Response(status_code=304, headers=headers)
    return Response(content, headers=headers, media_type="application/jwk-set+json")  # HEAD: uvicorn drops the body


async def metadata_endpoint(service: Service) -> Response:
    body = metadata(service.settings.issuer, admin_scope=service.settings.admin_scope)
    return service.json(body, headers={"Cache-Control": "public, max-age=3600"})

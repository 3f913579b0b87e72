"""POST /revoke: RFC 7009 token revocation, by the client the token was issued to.

The client authenticates as at /token. The token must verify against one of the issuer's
keys (from the verified state, the algorithm taken from the key) and carry this issuer and
the client's own client_id; then a ``token.revoked`` event with its jti and exp goes out
to every agent. Anything else (a stranger's token, garbage, an expired token) is answered
200 as well, as RFC 7009 §2.2 says: the caller learns nothing about tokens it does not own.

A disabled client may still revoke its own tokens. Disabling comes first in a leak
(docs/api.md), and the client's owner must then be able to clean up; whoever holds the
leaked secret can only revoke tokens of that client, which helps the defender.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from ..tokens import verified_claims
from .oauth import NO_STORE, RATE_LIMITED, OAuthError, authenticate_client, error_response, peer_address, read_form

if TYPE_CHECKING:
    from . import Service

__all__ = ["revocation_endpoint", "verified_claims"]

log = logging.getLogger("keyherald.issuer")


async def _over_revocation_budget(service: Service, client_id: str) -> int | None:
    """Seconds to wait when the client used up this minute's revocations, else None."""
    now = service.clock()
    window = int(now // 60)
    key = service.runtime.ctx.names.ratelimit("revoke", f"{client_id}:{window}")
    redis = service.runtime.ctx.redis
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, 120)
        count, _ = await pipe.execute()
    if int(count) <= service.settings.revocations_per_client:
        return None
    return max(1, math.ceil((window + 1) * 60 - now))


async def revocation_endpoint(service: Service, request: Request) -> Response:
    try:
        form = await read_form(request)
    except OAuthError as exc:
        return error_response(exc)
    async with service.redis_slots:
        try:
            client = await authenticate_client(
                service, request.headers.get("authorization"), peer_address(request), form, disabled_ok=True
            )
            token = form.get("token")
            if not token:
                raise OAuthError("invalid_request", "the token parameter is required")
        except OAuthError as exc:
            return error_response(exc)
        claims = verified_claims(token, await service.state(), service.settings.issuer)
        if claims is not None and claims.get("client_id") == client.client_id:
            jti, exp = claims.get("jti"), claims.get("exp")
            if isinstance(jti, str) and isinstance(exp, int) and not isinstance(exp, bool) and exp > service.clock():
                retry_after = await _over_revocation_budget(service, client.client_id)
                if retry_after is not None:
                    RATE_LIMITED.labels("revoke").inc()
                    log.warning("client %r is over its revocation budget", client.client_id)
                    return error_response(OAuthError(
                        "temporarily_unavailable", "too many revocations; retry later",
                        status=429, headers={"Retry-After": str(retry_after)},
                    ))
                seq = await service.runtime.admin.revoke_token(jti, exp)
                log.info("client %s revoked one of its tokens (seq %d)", client.client_id, seq)
    return Response(status_code=200, headers=NO_STORE)

"""The admin HTTP API: revoke tokens, subjects and keys, rotate, manage clients.

Callers present a keyherald token (``Authorization: Bearer``) whose audience is the issuer
itself (``KEYHERALD_ISSUER``) and whose scope holds ``KEYHERALD_ADMIN_SCOPE``. The issuer
checks it with its own verifier agent, exactly as any service checks its callers: no second
credential system, and revoking an operator's client (``revoke subject``) locks it out too.
Answers per RFC 6750: 401 ``invalid_token`` (or no error code when no token was sent),
403 ``insufficient_scope``; the reason a token was refused goes to the log only.

    keyherald clients create ops --audience "$KEYHERALD_ISSUER" --scope keyherald:admin
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ..errors import ClientExists, ClientNotFound, KeyNotFound
from ..lifecycle import describe
from ..registry import ClientRegistry
from ..tokens import verified_claims
from .openapi import errors

if TYPE_CHECKING:
    from keyherald.shared.state import State

    from ..fleet import Target
    from . import Service

__all__ = ["ADMIN_CLAIMS", "AdminDenied", "admin_claims", "admin_router", "check_admin", "fleet_target"]

log = logging.getLogger("keyherald.issuer")

ADMIN_CLAIMS = "keyherald_admin_claims"
"""Where the gate (:mod:`.gate`) leaves the claims it checked, in the request's state."""


class AdminDenied(Exception):
    """Answered per RFC 6750 by the app's handler."""

    def __init__(self, status: int, error: str | None, description: str, scope: str | None = None) -> None:
        super().__init__(description)
        self.status, self.error, self.description, self.scope = status, error, description, scope

    def response(self) -> JSONResponse:
        challenge = 'Bearer realm="keyherald"'
        if self.error:
            challenge += f', error="{self.error}"'
        if self.scope:
            challenge += f', scope="{self.scope}"'
        body = {"error": self.error or "invalid_token", "error_description": self.description}
        if self.status == 503:
            return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})
        return JSONResponse(body, status_code=self.status, headers={"WWW-Authenticate": challenge})


class TokenRevocation(BaseModel):
    """Either the token itself, or its jti and exp (Unix seconds)."""

    token: str | None = Field(default=None, max_length=8192)
    jti: str | None = Field(default=None, min_length=1, max_length=256)
    expires_at: int | None = None


class BulkToken(BaseModel):
    jti: str = Field(min_length=1, max_length=256)
    expires_at: int


class BulkRevocation(BaseModel):
    """Many tokens by jti and exp: all are revoked, or (any bad entry) none."""

    tokens: list[BulkToken] = Field(min_length=1, max_length=1_000_000)


class SubjectRevocation(BaseModel):
    sub: str = Field(min_length=1, max_length=256)


class KeyRevocation(BaseModel):
    kid: str = Field(min_length=1, max_length=256)


class Rotation(BaseModel):
    emergency: bool = False


class NewClient(BaseModel):
    name: str
    audiences: list[str] = Field(min_length=1)
    scopes: list[str] = Field(default_factory=list)
    ttl: int | None = Field(default=None, ge=1)


def _bad(description: str, status: int = 400, error: str = "invalid_request") -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


def check_admin(service: Service, request: Request) -> dict[str, Any]:
    """The claims of the admin token on ``request``; AdminDenied (RFC 6750) otherwise."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        if service.runtime.agent is None:
            raise AdminDenied(503, "temporarily_unavailable", "the issuer's verifier agent is starting")
        raise AdminDenied(401, None, "a bearer token is required")
    claims = admin_claims(service, token.strip())
    log.info("admin API call by %s: %s %s", claims.get("sub"), request.method, request.url.path)
    return claims


def admin_claims(service: Service, token: str) -> dict[str, Any]:
    """The claims of ``token`` when it is an admin token (audience: this issuer, the admin
    scope), checked by the issuer's own agent; AdminDenied otherwise."""
    agent = service.runtime.agent
    if agent is None:
        raise AdminDenied(503, "temporarily_unavailable", "the issuer's verifier agent is starting")
    from keyherald.verifier.errors import InvalidToken

    try:
        claims = agent.verify(token)
    except InvalidToken as exc:
        log.info("admin API refused a token: %s", exc.reason)
        raise AdminDenied(401, "invalid_token", "the access token is not valid") from None
    if service.settings.admin_scope not in str(claims.get("scope", "")).split():
        raise AdminDenied(403, "insufficient_scope", "the token lacks the admin scope", service.settings.admin_scope)
    return claims


async def fleet_target(service: Service, state: State, seq: int, log: str | None = None) -> Target | None:
    """The event an operator waits for the fleet to hold: ``seq`` of the current log (or of
    ``log``); None when the current log has no such event."""
    from ..eventfeed import event_time
    from ..fleet import Target

    if seq < 1 or (seq > state.seq and (log is None or log == state.log)):
        return None
    when = state.time if seq >= state.seq else await event_time(service.runtime.ctx, seq)
    return Target(log or state.log, seq, when)


def admin_router(service: Service) -> APIRouter:
    settings = service.settings

    async def require_admin(request: Request) -> dict[str, Any]:
        # The gate checked the token before the body was read; a request that reached the
        # router some other way is checked here. async: verify is CPU-only, on the loop.
        claims = request.scope.get("state", {}).get(ADMIN_CLAIMS)
        return claims if isinstance(claims, dict) else check_admin(service, request)

    # Every route of the router requires an admin token (a router-level dependency).
    router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)],
                       responses=errors(401, 403, 503))
    with_body = errors(400, 413)
    admin = service.runtime.admin

    def registry() -> ClientRegistry:
        return service.runtime.ctx.clients()

    @router.get("/keys", summary="every key agents hold, with its state and times")
    async def keys() -> Any:
        return [describe(r) for r in await admin.keys()]

    @router.get("/fleet", summary="the agents reporting presence: live (seq, lag, stale) and lost")
    async def fleet() -> Any:
        from ..fleet import read_fleet

        state = await service.runtime.ctx.log.sync()
        return (await read_fleet(service.redis, service.names, state.position)).as_dict()

    @router.get("/fleet/confirm", responses=errors(400),
                summary="how many live agents hold event seq (of the current log, or of log), and which do not")
    async def confirm(seq: int, log: str | None = None) -> Any:
        from ..fleet import read_fleet

        state = await service.runtime.ctx.log.sync()
        target = await fleet_target(service, state, seq, log)
        if target is None:
            return _bad("seq must name an event of the log")
        view = await read_fleet(service.redis, service.names, state.position)
        missing = view.missing(target)
        return {"log": target.log, "seq": seq, "live": len(view.live), "confirmed": len(view.live) - len(missing),
                "missing": [a.as_dict() for a in missing]}

    @router.post("/keys/rotate", responses=with_body,
                 summary="activate the standby now; emergency also revokes the old key")
    async def rotate(body: Rotation) -> Any:
        return {"seq": await admin.rotate(emergency=body.emergency)}

    @router.post("/revoke/key", responses={**with_body, **errors(404)},
                 summary="revoke a (compromised) key: emergency rotation if it is active")
    async def revoke_key(body: KeyRevocation) -> Any:
        try:
            return {"seq": await admin.revoke_key(body.kid)}
        except KeyNotFound:
            return _bad("no key with that kid", 404, "not_found")

    @router.post("/revoke/subject", responses=with_body, summary="refuse every token issued to a subject up to now")
    async def revoke_subject(body: SubjectRevocation) -> Any:
        return {"seq": await admin.revoke_subject(body.sub)}

    @router.post("/revoke/token", responses=with_body, summary="revoke one token, given itself or its jti and exp")
    async def revoke_token(body: TokenRevocation) -> Any:
        if body.token is not None:
            claims = verified_claims(body.token, await service.state(), settings.issuer)
            jti, exp = (claims or {}).get("jti"), (claims or {}).get("exp")
            if not isinstance(jti, str) or not isinstance(exp, int):
                return _bad("not a token signed by this issuer with a key it still holds")
            return {"seq": await admin.revoke_token(jti, exp), "jti": jti}
        if body.jti is None or body.expires_at is None:
            return _bad("give either token, or jti and expires_at")
        return {"seq": await admin.revoke_token(body.jti, body.expires_at), "jti": body.jti}

    @router.post("/revoke/tokens", responses=with_body, summary="revoke many tokens by jti and exp, in bulk")
    async def revoke_tokens(body: BulkRevocation) -> Any:
        now = int(service.clock())
        live = [(t.jti, t.expires_at) for t in body.tokens if t.expires_at >= now]
        if not live:
            return {"seq": (await service.state()).seq, "revoked": 0, "expired": len(body.tokens)}
        seq = await admin.revoke_tokens(live)
        return {"seq": seq, "revoked": len(live), "expired": len(body.tokens) - len(live)}

    @router.get("/clients", summary="registered clients (never their secrets)")
    async def clients() -> Any:
        return [c.public() for c in await registry().list()]

    @router.post("/clients", status_code=201, responses={**with_body, **errors(409)},
                 summary="register a client; its secret is shown once")
    async def create_client(body: NewClient) -> Any:
        try:
            client, secret = await registry().create(
                body.name, audiences=body.audiences, scopes=body.scopes, ttl=body.ttl
            )
        except ClientExists as exc:
            return _bad(str(exc), 409, "conflict")
        except ValueError as exc:
            return _bad(str(exc))
        return JSONResponse(
            {**client.public(), "client_secret": secret}, status_code=201, headers={"Cache-Control": "no-store"}
        )

    @router.post("/clients/{client_id}/disable", responses=errors(404), summary="the client gets no more tokens")
    async def disable_client(client_id: str) -> Any:
        try:
            return (await registry().disable(client_id)).public()
        except ClientNotFound:
            return _bad("no such client", 404, "not_found")

    @router.post("/clients/{client_id}/enable", responses=errors(404), summary="let a disabled client get tokens again")
    async def enable_client(client_id: str) -> Any:
        try:
            return (await registry().enable(client_id)).public()
        except ClientNotFound:
            return _bad("no such client", 404, "not_found")

    @router.post("/clients/{client_id}/rotate-secret", responses=errors(404),
                 summary="a new secret; the old one stops at once")
    async def rotate_secret(client_id: str) -> Any:
        try:
            client, secret = await registry().rotate_secret(client_id)
        except ClientNotFound:
            return _bad("no such client", 404, "not_found")
        return JSONResponse({**client.public(), "client_secret": secret}, headers={"Cache-Control": "no-store"})

    return router

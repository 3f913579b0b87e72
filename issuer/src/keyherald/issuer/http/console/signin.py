"""Signing in to the console and out of it.

Sign-in takes what the admin API takes: the credentials of a client registered with the
admin scope and this issuer as an audience (``keyherald clients create ops --audience
"$KEYHERALD_ISSUER" --scope keyherald:admin``), or an admin token. Failures count against the
token endpoint's limits (per client_id and address, per address), in Redis, shared by every
replica: past them, sign-in answers 429 even with the right secret until the window ends.
Every failure gets the same answer; the log says why.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from keyherald.shared.encoding import b64url_decode, loads_object
from keyherald.shared.jws import split_compact

from ..admin import AdminDenied, admin_claims
from ..oauth import peer_address
from .access import admits, cookie_name, read_fields, require_same_origin, secure
from .render import redirect
from .sessions import credential_of

if TYPE_CHECKING:
    from . import Console, Route
    from .sessions import Session

__all__ = ["routes"]

log = logging.getLogger("keyherald.issuer.console")
FAILED = "Sign-in failed: wrong client ID or secret, or not an admin client (or token)."


async def signin_page(console: Console, request: Request) -> Response:
    if await _session(console, request) is not None:
        return redirect("/console")
    return console.render.page("signin.html", title="Sign in", error=None, client_id="")


async def _session(console: Console, request: Request) -> Session | None:
    from .access import current_session

    return await current_session(request, console.service, console.store)


async def signin(console: Console, request: Request) -> Response:
    service = console.service
    require_same_origin(request, service)
    fields = await read_fields(request)
    token = fields.get("token", "").strip()
    client_id = fields.get("client_id", "").strip()
    address = peer_address(request)
    limiter = service.limiter
    counted = None if token else client_id[:256] or None
    verdict = await limiter.check(counted, address)
    if verdict.limited:
        log.warning("console sign-in refused: too many failures from %s", address)
        return console.render.page(
            "signin.html", 429, title="Sign in", client_id=client_id,
            error=f"Too many failed sign-ins. Try again in {verdict.retry_after} s.",
        )
    store = console.store
    if token:
        try:
            claims = admin_claims(service, token)
        except AdminDenied as denied:
            if denied.status == 503:
                return console.render.page("signin.html", 503, title="Sign in", client_id="",
                                           error="The issuer is starting; try again in a moment.")
            return await _failed(console, counted, address, "token", denied.description)
        exp = claims.get("exp")
        session_id, _ = await store.create(
            str(claims.get("sub", "")), "token",
            expires=float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None,
            jti=str(claims.get("jti", "")), kid=token_kid(token),
        )
        who = str(claims.get("sub", ""))
    else:
        client = await service.runtime.ctx.clients().authenticate(client_id, fields.get("client_secret", ""))
        if client is None or not admits(service, client.scopes, client.audiences, client.disabled):
            reason = "wrong credentials" if client is None else "not an admin client"
            return await _failed(console, counted, address, "client", reason)
        session_id, _ = await store.create(client.client_id, "client",
                                           credential=credential_of(client.secret_salt, client.secret_hash))
        who = client.client_id
    log.info("console: %r signed in from %s", who, address)
    response = redirect("/console")
    _set_cookie(console, request, response, session_id)
    return response


async def _failed(console: Console, client_id: str | None, address: str | None, how: str, reason: str) -> Response:
    await console.service.limiter.record_failure(client_id, address)
    log.info("console sign-in failed (%s) for %.80r from %s: %s", how, client_id, address, reason)
    return console.render.page("signin.html", 401, title="Sign in", client_id=client_id or "", error=FAILED)


def _set_cookie(console: Console, request: Request, response: Response, session_id: str) -> None:
    https = secure(request, console.service)
    response.set_cookie(
        cookie_name(request, console.service), session_id, httponly=True, samesite="strict", secure=https,
        path="/" if https else "/console",  # __Host- cookies must say path=/
    )


async def signout(console: Console, request: Request) -> Response:
    from .access import check_csrf

    require_same_origin(request, console.service)
    name = cookie_name(request, console.service)
    session = await _session(console, request)
    if session is not None:
        check_csrf(await read_fields(request), session)
        await console.store.end(request.cookies.get(name))
        log.info("console: %r signed out", session.principal)
    response = redirect("/console/signin")
    https = secure(request, console.service)
    response.delete_cookie(name, path="/" if https else "/console", secure=https, httponly=True, samesite="strict")
    return response


def routes(console: Console) -> list[Route]:
    return [
        ("/console/signin", console.open(signin_page), ["GET"]),
        ("/console/signin", console.open(signin), ["POST"]),
        ("/console/signout", console.open(signout), ["POST"]),
    ]


def token_kid(token: str) -> str:
    """The kid of a token the agent just verified (so its header is well formed)."""
    try:
        kid = loads_object(b64url_decode(split_compact(token)[0])).get("kid", "")
    except ValueError:
        return ""
    return kid if isinstance(kid, str) else ""

"""What the console's forms do (POST): each from this console's page (origin, CSRF token),
each destructive one confirmed first.

A destructive form posted without ``confirmed=yes`` gets a page saying exactly what will
happen, with the same fields and a button to go ahead: the confirmation needs no script, and
a request forged without it (if it ever got past the CSRF check) changes nothing. The actions
are the admin API's: :class:`...admin.Admin` and the client registry, appended by this replica.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from ...errors import ClientExists, ClientNotFound, KeyNotFound
from ...tokens import verified_claims
from .access import check_csrf, read_fields, require_same_origin, whole_number
from .render import redirect

if TYPE_CHECKING:
    from . import Console, Route
    from .sessions import Session

__all__ = ["routes"]

log = logging.getLogger("keyherald.issuer.console")
_SPLIT = re.compile(r"[\s,]+")


async def _form(console: Console, request: Request, session: Session) -> dict[str, str]:
    require_same_origin(request, console.service)
    fields = await read_fields(request)
    check_csrf(fields, session)
    return fields


def _confirm(console: Console, session: Session, fields: dict[str, str], *, action: str, title: str,
             consequences: list[str], button: str, danger: bool = True) -> Response:
    keep = {k: v for k, v in fields.items() if k not in ("csrf", "confirmed")}
    return console.render.page("confirm.html", title=title, session=session, nav="", action=action,
                               consequences=consequences, button=button, danger=danger, fields=keep)


def _done(page: str, code: str, seq: int, log_id: str) -> Response:
    return redirect(f"{page}?{urlencode({'done': code, 'seq': seq, 'log': log_id})}")


async def _log_id(console: Console) -> str:
    return (await console.service.state()).log


async def rotate(console: Console, request: Request, session: Session) -> Response:
    fields = await _form(console, request, session)
    emergency = fields.get("emergency") == "yes"
    state = await console.service.state()
    active = state.active_key.kid if state.active_key else "(none)"
    if fields.get("confirmed") != "yes":
        from ...lifecycle import standby

        nxt = standby(state)
        takes_over = f"Standby key {nxt.kid} signs from now on." if nxt else "A new key is made and signs."
        if emergency:
            lines = [f"Key {active} is REVOKED now: every token it signed stops verifying on every agent"
                     " within about a second.", takes_over,
                     "Services holding tokens from the old key get 401s until they fetch new ones"
                     " (TokenClient does so on its own).", "A new standby key is published."]
            return _confirm(console, session, fields, action="/console/keys/rotate", title="Emergency rotation",
                            consequences=lines, button="Revoke the active key and rotate now")
        lines = [f"Key {active} stops signing now; it keeps verifying until the tokens it signed expire.",
                 takes_over, "A new standby key is published. No token is refused."]
        return _confirm(console, session, fields, action="/console/keys/rotate", title="Rotate now",
                        consequences=lines, button="Rotate now", danger=False)
    seq = await console.service.runtime.admin.rotate(emergency=emergency)
    log.warning("console: %r %s (seq %d)", session.principal, "emergency-rotated" if emergency else "rotated", seq)
    return _done("/console", "emergency" if emergency else "rotated", seq, await _log_id(console))


async def revoke_subject(console: Console, request: Request, session: Session) -> Response:
    fields = await _form(console, request, session)
    sub = (fields.get("other", "").strip() or fields.get("sub", "")).strip()
    if not sub or len(sub) > 256:
        return await _revoke_error(console, request, session, "Choose a subject (1 to 256 characters).")
    fields = {**fields, "sub": sub, "other": ""}
    if fields.get("confirmed") != "yes":
        known = await console.service.runtime.ctx.clients().get(sub) is not None
        lines = [f"Every token issued to {sub} up to this second is refused by every agent within about a second."]
        lines.append("Its tokens issued from now on are accepted: to lock it out, disable the client as well."
                     if known else
                     f"No registered client is named {sub}. Revoke it anyway only for a deleted client's"
                     " tokens: a typo revokes nothing real.")
        return _confirm(console, session, fields, action="/console/revoke/subject",
                        title="Revoke a subject" if known else "Revoke an UNKNOWN subject",
                        consequences=lines, button=f"Revoke {sub}")
    seq = await console.service.runtime.admin.revoke_subject(sub)
    log.warning("console: %r revoked subject %r (seq %d)", session.principal, sub, seq)
    return _done("/console/revoke", "subject", seq, await _log_id(console))


async def revoke_token(console: Console, request: Request, session: Session) -> Response:
    fields = await _form(console, request, session)
    service = console.service
    token, jti, exp = fields.get("token", "").strip(), fields.get("jti", "").strip(), fields.get("exp", "").strip()
    if token:
        claims = verified_claims(token, await service.state(), service.settings.issuer) or {}
        jti, found = str(claims.get("jti", "")), claims.get("exp")
        if not jti or not isinstance(found, int):
            return await _revoke_error(console, request, session,
                                       "That is not a token this issuer signed with a key it still holds.")
        exp = str(found)
    if not jti or len(jti) > 256 or whole_number(exp, digits=12) is None:
        return await _revoke_error(console, request, session,
                                   "Paste the token, or give its jti and its exp (Unix seconds).")
    if fields.get("confirmed") != "yes":
        lines = [f"The token with jti {jti} is refused by every agent within about a second."]
        return _confirm(console, session, {"csrf": "", "jti": jti, "exp": exp}, action="/console/revoke/token",
                        title="Revoke a token", consequences=lines, button="Revoke the token")
    seq = await service.runtime.admin.revoke_token(jti, int(exp))
    log.warning("console: %r revoked a token (seq %d)", session.principal, seq)
    return _done("/console/revoke", "token", seq, await _log_id(console))


async def revoke_key(console: Console, request: Request, session: Session) -> Response:
    fields = await _form(console, request, session)
    kid = fields.get("kid", "")
    state = await console.service.state()
    key = state.keys.get(kid)
    if key is None:
        return await _revoke_error(console, request, session, "No key with that kid.")
    if fields.get("confirmed") != "yes":
        lines = [f"Key {kid} ({key.state.value}) is revoked: every token it signed stops verifying on every agent"
                 " within about a second."]
        if key.state.value == "active":
            lines.append("It is the signing key: the standby signs from now on (an emergency rotation).")
        return _confirm(console, session, fields, action="/console/revoke/key", title="Revoke a key",
                        consequences=lines, button="Revoke the key")
    try:
        seq = await console.service.runtime.admin.revoke_key(kid)
    except KeyNotFound as exc:
        return await _revoke_error(console, request, session, str(exc))
    log.warning("console: %r revoked key %s (seq %d)", session.principal, kid, seq)
    return _done("/console/revoke", "key", seq, await _log_id(console))


async def _revoke_error(console: Console, request: Request, session: Session, error: str) -> Response:
    from . import pages, views

    clients = await console.service.runtime.ctx.clients().list()
    return console.render.page(
        "revoke.html", 400, title="Revoke", **await pages.common(console, session, "revoke"),
        clients=clients, keys=await views.keys(console.service), done=None, error=error,
    )


async def create_client(console: Console, request: Request, session: Session) -> Response:
    fields = await _form(console, request, session)
    name = fields.get("name", "").strip()
    audiences = [a for a in _SPLIT.split(fields.get("audiences", "")) if a]
    scopes = [s for s in _SPLIT.split(fields.get("scopes", "")) if s]
    ttl_text = fields.get("ttl", "").strip()
    try:
        if ttl_text and whole_number(ttl_text, digits=9) is None:
            raise ValueError("the token lifetime is a whole number of seconds")
        client, secret = await console.service.runtime.ctx.clients().create(
            name, audiences=audiences, scopes=scopes, ttl=int(ttl_text) if ttl_text else None)
    except (ValueError, ClientExists) as exc:
        return await _clients_error(console, session, f"Cannot create client “{name}”: {exc}", fields)
    log.warning("console: %r created client %r", session.principal, client.client_id)
    return _secret(console, session, client.public(), secret, created=True)


def _secret(console: Console, session: Session, client: dict[str, Any], secret: str, *, created: bool) -> Response:
    response = console.render.page("secret.html", title="Client secret", session=session, nav="clients",
                                   client=client, secret=secret, created=created)
    response.headers["Cache-Control"] = "no-store"
    return response


async def _clients_error(console: Console, session: Session, error: str, form: dict[str, str]) -> Response:
    from . import pages

    clients = await console.service.runtime.ctx.clients().list()
    return console.render.page(
        "clients.html", 400, title="Clients", **await pages.common(console, session, "clients"),
        clients=clients, done=None, error=error, form=form,
    )


async def client_action(console: Console, request: Request, session: Session) -> Response:
    fields = await _form(console, request, session)
    client_id = str(request.path_params.get("client_id", ""))
    what = str(request.path_params.get("what", ""))
    registry = console.service.runtime.ctx.clients()
    if what not in ("disable", "enable", "rotate-secret"):
        return await _clients_error(console, session, "No such action.", {})
    if what != "enable" and fields.get("confirmed") != "yes":
        lines = ([f"Client {client_id} gets no new tokens from now on, on every replica.",
                  "Tokens it holds stay valid until they expire: revoke its subject to cut them off."]
                 if what == "disable" else
                 [f"Client {client_id} gets a new secret, shown once on the next page.",
                  "The old secret stops working at once: the service must be given the new one."])
        return _confirm(console, session, fields, action=f"/console/clients/{client_id}/{what}",
                        title="Disable a client" if what == "disable" else "Rotate a client secret",
                        consequences=lines, button="Disable it" if what == "disable" else "Rotate the secret")
    try:
        if what == "rotate-secret":
            client, secret = await registry.rotate_secret(client_id)
            log.warning("console: %r rotated the secret of %r", session.principal, client_id)
            return _secret(console, session, client.public(), secret, created=False)
        done = await (registry.disable(client_id) if what == "disable" else registry.enable(client_id))
    except ClientNotFound:
        return await _clients_error(console, session, f"No client named “{client_id}”.", {})
    log.warning("console: %r %sd client %r", session.principal, what, done.client_id)
    seq = registry.last_events[-1].seq if registry.last_events else (await console.service.state()).seq
    return _done("/console/clients", "disabled" if what == "disable" else "enabled", seq, await _log_id(console))


def routes(console: Console) -> list[Route]:
    return [
        ("/console/keys/rotate", console.signed_in(rotate), ["POST"]),
        ("/console/revoke/subject", console.signed_in(revoke_subject), ["POST"]),
        ("/console/revoke/token", console.signed_in(revoke_token), ["POST"]),
        ("/console/revoke/key", console.signed_in(revoke_key), ["POST"]),
        ("/console/clients", console.signed_in(create_client), ["POST"]),
        ("/console/clients/{client_id}/{what}", console.signed_in(client_action), ["POST"]),
    ]

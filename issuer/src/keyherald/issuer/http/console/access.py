"""Who may use the console, request by request: the session cookie, CSRF, the origin, headers.

- The cookie (``keyherald_console``; ``__Host-keyherald_console`` over https, then Secure)
  is HttpOnly and SameSite=Strict: no script reads it and no other site's page sends it.
- Every state-changing request (POST) carries the session's CSRF token in the form, and an
  ``Origin`` (or, from browsers that omit it, ``Sec-Fetch-Site: same-origin``) naming this
  console; either failing is a 403 that changes nothing.
- A session serves only while its holder still holds the admin scope: a disabled or
  de-scoped client, a revoked subject or token ends it on its next request.
- Every answer forbids framing, sniffing, caching and referrers to other sites (same-origin:
  with no referrer at all, browsers send ``Origin: null`` on form posts, which the origin
  check could not tell from a sandboxed attacker), under a Content-Security-Policy that runs
  no script but the console's own file.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request

from ...settings import is_loopback_url
from ..gate import BodyTooLarge, ClientGone, read_body
from ..oauth import MAX_BODY
from .sessions import Session, SessionStore, credential_of

if TYPE_CHECKING:
    from .. import Service

__all__ = [
    "CSP",
    "SECURITY_HEADERS",
    "Forbidden",
    "admits",
    "check_csrf",
    "cookie_name",
    "current_session",
    "read_fields",
    "require_same_origin",
    "secure",
    "still_admin",
]

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self';"
       " form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class Forbidden(Exception):
    """A state-changing request that did not come from the console's own page."""


def secure(request: Request, service: Service) -> bool:
    """Served over https (directly, or behind a trusted proxy, or as the issuer URL says)."""
    return request.url.scheme == "https" or (
        service.settings.issuer.startswith("https://") and not is_loopback_url(service.settings.issuer))


def cookie_name(request: Request, service: Service) -> str:
    return "__Host-keyherald_console" if secure(request, service) else "keyherald_console"


async def current_session(request: Request, service: Service, store: SessionStore) -> Session | None:
    session = await store.get(request.cookies.get(cookie_name(request, service)))
    if session is None:
        return None
    if not await still_admin(service, session):
        await store.end(request.cookies.get(cookie_name(request, service)))
        return None
    return session


async def still_admin(service: Service, session: Session) -> bool:
    """Does the person behind ``session`` still hold the admin scope, as the log says now?"""
    state = await service.state()
    cut = state.revoked_subjects.get(session.principal)
    if cut is not None and cut.revoked_at >= int(session.created):
        return False
    if session.kind == "token":
        key = state.keys.get(session.kid)
        return session.jti not in state.revoked_tokens and key is not None and key.revoked_at is None
    client = await service.runtime.ctx.clients().get(session.principal)
    return (client is not None and admits(service, client.scopes, client.audiences, client.disabled)
            and hmac.compare_digest(credential_of(client.secret_salt, client.secret_hash), session.credential))


def admits(service: Service, scopes: tuple[str, ...], audiences: tuple[str, ...], disabled: bool) -> bool:
    """A client whose tokens would pass the admin API: the admin scope, this issuer as audience."""
    settings = service.settings
    return not disabled and settings.admin_scope in scopes and settings.issuer in audiences


def _origins(request: Request, service: Service) -> set[str]:
    mine = {f"{request.url.scheme}://{request.headers.get('host', '')}"}
    issuer = urlsplit(service.settings.issuer)
    mine.add(f"{issuer.scheme}://{issuer.netloc}")
    return mine


def require_same_origin(request: Request, service: Service) -> None:
    """Forbidden unless the browser says the request comes from this console's own pages."""
    origin = request.headers.get("origin")
    if origin is not None:
        if origin not in _origins(request, service):
            raise Forbidden("the request comes from another site")
        return
    if request.headers.get("sec-fetch-site") != "same-origin":
        raise Forbidden("the request does not say where it comes from")


def check_csrf(fields: dict[str, str], session: Session) -> None:
    sent = fields.get("csrf", "")
    if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        raise Forbidden("the form's CSRF token is missing or wrong (reload the page)")


async def read_fields(request: Request) -> dict[str, str]:
    """An urlencoded form, bounded as every body is; a repeated field keeps its first value."""
    try:
        body = await read_body(request.receive, MAX_BODY)
    except (BodyTooLarge, ClientGone):
        raise Forbidden("the form is too large") from None
    fields: dict[str, str] = {}
    for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        fields.setdefault(name, value)
    return fields


def whole_number(text: str, *, digits: int = 15) -> int | None:
    """``text`` as a non-negative integer of at most ``digits`` ASCII digits; None otherwise
    (``str.isdigit`` alone admits '²', and int() of 5,000 digits raises)."""
    if not text or len(text) > digits or not (text.isascii() and text.isdigit()):
        return None
    return int(text)

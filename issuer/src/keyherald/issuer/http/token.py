"""POST /token: the OAuth 2.0 client credentials grant (RFC 6749 §4.4), tokens per RFC 9068.

Policy, in the order it is checked:
- ``grant_type`` missing: ``invalid_request``; anything but ``client_credentials``:
  ``unsupported_grant_type``. ``invalid_grant`` is never produced: this grant has no grant
  beyond the client's own credentials, whose failures are ``invalid_client`` (§4.4.2).
- client authentication (see :mod:`.oauth`).
- audiences: ``audience`` and RFC 8707 ``resource`` parameters, each repeatable, together
  name the audiences; every one must be registered for the client, else ``invalid_target``.
  None given: the client's only audience, or ``invalid_request`` if it has several (we will
  not guess which service a token is for).
- scopes: none requested gets all the client's scopes; any scope it was not registered for
  is refused with ``invalid_scope``, never silently dropped.
- lifetime: the client's ttl capped by the issuer's token_ttl (the maximum agents enforce).
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Histogram
from starlette.requests import Request
from starlette.responses import Response

from ..clients import Client
from ..errors import KeyNotFound
from .oauth import NO_STORE, Form, OAuthError, authenticate_client, error_response, read_form

if TYPE_CHECKING:
    from . import Service

__all__ = ["GRANT_TYPE", "audiences_for", "claims_for", "scopes_for", "token_endpoint"]

GRANT_TYPE = "client_credentials"

ISSUED = Counter("keyherald_tokens_issued", "Access tokens issued, by client", ["client"])
REFUSED = Counter(
    "keyherald_token_requests_refused", "Token requests refused, by OAuth error (and client, once authenticated)",
    ["error", "client"],
)
LATENCY = Histogram(
    "keyherald_token_request_duration_seconds", "POST /token, from the request to the answer, seconds",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)


def audiences_for(client: Client, form: Form) -> list[str]:
    requested = list(dict.fromkeys(form.all("audience") + form.all("resource")))
    if not requested:
        if len(client.audiences) == 1:
            return [client.audiences[0]]
        raise OAuthError(
            "invalid_request", "this client has several audiences: name one with the audience parameter"
        )
    if any(not a for a in requested):
        raise OAuthError("invalid_request", "an audience parameter is empty")
    allowed = set(client.audiences)
    if any(a not in allowed for a in requested):
        raise OAuthError("invalid_target", "an audience requested is not registered for this client")
    return requested


def scopes_for(client: Client, form: Form) -> list[str]:
    raw = form.get("scope")
    if raw is None:
        return list(client.scopes)
    requested = list(dict.fromkeys(raw.split(" ")))
    if any(not s for s in requested):
        raise OAuthError("invalid_scope", "the scope parameter is malformed (one space between scopes)")
    allowed = set(client.scopes)
    if any(s not in allowed for s in requested):
        raise OAuthError("invalid_scope", "a scope requested is not registered for this client")
    return requested


def claims_for(client: Client, audiences: list[str], scopes: list[str], *, issuer: str, now: float,
               max_ttl: int) -> dict[str, Any]:
    iat = int(now)
    ttl = min(client.ttl, max_ttl) if client.ttl is not None else max_ttl
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": client.client_id,
        "aud": audiences[0] if len(audiences) == 1 else audiences,
        "iat": iat,
        "nbf": iat,
        "exp": iat + ttl,
        "jti": secrets.token_urlsafe(16),
        "client_id": client.client_id,
    }
    if scopes:
        claims["scope"] = " ".join(scopes)
    return claims


async def token_endpoint(service: Service, request: Request) -> Response:
    started = time.perf_counter()
    try:
        form = await read_form(request)
        grant = form.get("grant_type")
        if grant is None:
            raise OAuthError("invalid_request", "grant_type is required")
        if grant != GRANT_TYPE:
            raise OAuthError("unsupported_grant_type", "only the client_credentials grant is supported")
    except OAuthError as exc:
        REFUSED.labels(exc.error, "").inc()
        return error_response(exc)
    try:
        async with service.redis_slots:
            return await _issue(service, request, form)
    finally:
        LATENCY.observe(time.perf_counter() - started)


async def _issue(service: Service, request: Request, form: Form) -> Response:
    client_id = ""  # a label only once authenticated: the registry bounds it, a request's claim does not
    try:
        client = await authenticate_client(service, request, form)
        client_id = client.client_id
        audiences = audiences_for(client, form)
        scopes = scopes_for(client, form)
    except OAuthError as exc:
        REFUSED.labels(exc.error, exc.client or client_id).inc()
        return error_response(exc)
    settings = service.settings
    claims = claims_for(
        client, audiences, scopes, issuer=settings.issuer, now=service.clock(), max_ttl=int(settings.token_ttl)
    )
    try:
        token = await service.runtime.signer.sign(claims)
    except KeyNotFound:
        REFUSED.labels("temporarily_unavailable", client_id).inc()
        return error_response(OAuthError(
            "temporarily_unavailable", "the issuer has no active signing key yet", status=503,
            headers={"Retry-After": "1"},
        ))
    ISSUED.labels(client_id).inc()
    body = {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": claims["exp"] - claims["iat"],
        "scope": " ".join(scopes),
    }
    return service.json(body, headers=NO_STORE)

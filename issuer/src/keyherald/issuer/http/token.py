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

import json
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from prometheus_client import Counter, Histogram
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from ..clients import Client
from ..errors import IssuerError, KeyNotFound
from .oauth import (
    NO_STORE,
    Answer,
    Form,
    OAuthError,
    authenticate_client,
    error_answer,
    error_response,
    parse_form,
    peer_address,
    read_form,
)

if TYPE_CHECKING:
    from . import Service

__all__ = [
    "GRANT_TYPE",
    "ISSUED",
    "LATENCY",
    "REFUSED",
    "ClaimsTemplate",
    "Presented",
    "answer_form",
    "answer_token",
    "audiences_for",
    "claims_for",
    "scopes_for",
    "token_endpoint",
]

log = logging.getLogger("keyherald.issuer")

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


_HOLES = {"iat": "%(iat)d", "nbf": "%(nbf)d", "exp": "%(exp)d", "jti": '"%(jti)s"'}
_CLAIMS = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False)


class ClaimsTemplate:
    """The claims every token of one client for one request shape carries, as the JSON the
    signer signs (:func:`keyherald.shared.encoding.dumps`: compact, keys sorted), with holes
    for what changes per token (iat, nbf, exp, jti). Made once per shape; each token then
    costs one %-format instead of building and encoding a dict."""

    __slots__ = ("_payload", "answer", "issued", "ttl")

    def __init__(self, client: Client, audiences: list[str], scopes: list[str], *, issuer: str, max_ttl: int) -> None:
        claims = claims_for(client, audiences, scopes, issuer=issuer, now=0, max_ttl=max_ttl)
        self.ttl: int = claims["exp"] - claims["iat"]
        claims.update({name: "\x00" + name for name in _HOLES})
        text = _CLAIMS.encode(claims).replace("%", "%%")
        for name, hole in _HOLES.items():
            text = text.replace(f'"\\u0000{name}"', hole)
        self._payload = text
        scope = json.dumps(" ".join(scopes)).replace("%", "%%")
        self.answer = f'{{"access_token":"%s","token_type":"Bearer","expires_in":{self.ttl},"scope":{scope}}}'
        """The 200 answer's body, with a hole for the token."""
        self.issued = ISSUED.labels(client.client_id)
        """The client's tokens-issued counter (its label looked up once)."""

    def payload(self, now: float) -> str:
        """The claims of a token issued at ``now``, as JSON."""
        iat = int(now)
        return self._payload % {"iat": iat, "nbf": iat, "exp": iat + self.ttl, "jti": secrets.token_urlsafe(16)}


class Presented(NamedTuple):
    """A token request as it arrived, whichever way it came (the ASGI app or the direct path)."""

    authorization: str | None
    content_type: str | None
    body: bytes
    address: str | None
    started: float = 0.0
    """time.perf_counter() when the request was in (the latency metric)."""


async def token_endpoint(service: Service, request: Request) -> Response:
    """POST /token through the ASGI app (tests, pipelined requests): the same answer as the
    direct path gives."""
    started = time.perf_counter()
    try:
        form = await read_form(request)
    except OAuthError as exc:
        REFUSED.labels(exc.error, "").inc()
        LATENCY.observe(time.perf_counter() - started)
        return error_response(exc)
    presented = Presented(request.headers.get("authorization"), None, b"", peer_address(request), started)
    answer = await answer_form(service, presented, form)
    LATENCY.observe(time.perf_counter() - started)
    return answer.response()


async def answer_token(service: Service, presented: Presented) -> Answer:
    """The answer to a token request; never raises (Redis down and a log this replica
    refuses are 503s, anything unexpected a bare 500)."""
    try:
        form = parse_form(presented.content_type, presented.body)
    except OAuthError as exc:
        REFUSED.labels(exc.error, "").inc()
        answer = error_answer(exc)
    else:
        answer = await answer_form(service, presented, form)
    LATENCY.observe(time.perf_counter() - presented.started)
    return answer


async def answer_form(service: Service, presented: Presented, form: Form) -> Answer:
    try:
        grant = form.get("grant_type")
        if grant is None:
            raise OAuthError("invalid_request", "grant_type is required")
        if grant != GRANT_TYPE:
            raise OAuthError("unsupported_grant_type", "only the client_credentials grant is supported")
        async with service.redis_slots:
            return await _issue(service, presented, form)
    except OAuthError as exc:
        REFUSED.labels(exc.error, exc.client).inc()  # the client only once it authenticated
        return error_answer(exc)
    except RedisError as exc:
        log.warning("request failed: Redis unreachable (%s)", type(exc).__name__)
        return _unavailable("the issuer cannot reach its store")
    except IssuerError as exc:
        log.warning("request failed: %s", exc)
        return _unavailable("the issuer cannot use its log right now")
    except Exception:
        log.exception("unexpected error on POST /token")
        return Answer(500, b'{"error":"server_error"}', {})


def _unavailable(description: str) -> Answer:
    return error_answer(OAuthError("temporarily_unavailable", description, status=503, headers={"Retry-After": "1"}))


async def _issue(service: Service, presented: Presented, form: Form) -> Answer:
    client = await authenticate_client(service, presented.authorization, presented.address, form)
    try:
        template = service.template_for(client, form)
    except OAuthError as exc:
        exc.client = exc.client or client.client_id
        raise
    try:
        token = await service.runtime.signer.sign(template.payload(service.clock()))
    except KeyNotFound:
        raise OAuthError(
            "temporarily_unavailable", "the issuer has no active signing key yet", status=503,
            headers={"Retry-After": "1"}, client=client.client_id,
        ) from None
    template.issued.inc()
    return Answer(200, (template.answer % token).encode(), NO_STORE)

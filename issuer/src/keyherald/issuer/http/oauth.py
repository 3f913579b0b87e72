"""OAuth 2.0 plumbing shared by /token and /revoke: errors, the form, client authentication.

Errors are answered exactly as RFC 6749 §5.2 says: a JSON object with ``error`` and an
``error_description`` that never echoes a secret or a token, ``Cache-Control: no-store``.
``invalid_client`` is a 401 with ``WWW-Authenticate: Basic``; we send that header whether
the client used Basic or the form, because RFC 7235 §3.1 requires it on every 401.

Request bodies are parsed here, not by FastAPI: its 422 validation answers are not OAuth.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import parse_qsl, unquote_plus

from prometheus_client import Counter
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ..clients import Client, secret_matches
from ..ratelimit import Verdict

if TYPE_CHECKING:
    from . import Service

__all__ = [
    "MAX_BODY",
    "Answer",
    "NO_STORE",
    "ClientAuth",
    "Form",
    "OAuthError",
    "authenticate_client",
    "body_too_large",
    "credentials",
    "error_answer",
    "error_response",
    "parse_form",
    "peer_address",
    "read_form",
]

log = logging.getLogger("keyherald.issuer.auth")

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
AUTH_FAILURES = Counter(
    "keyherald_client_auth_failures", "Failed client authentications, by reason (unknown_client, wrong_secret,"
    " malformed)", ["reason"],
)
RATE_LIMITED = Counter("keyherald_rate_limited", "Requests refused with 429, by what was limited", ["kind"])
MAX_BODY = 16 * 1024
"""The most a request may carry, here and on every other route (:mod:`.gate`)."""
_TOO_LARGE = {"Connection": "close"}  # the rest is not read: do not wait for it either
_REPEATABLE = frozenset({"audience", "resource"})
_BASIC = 'Basic realm="keyherald", charset="UTF-8"'
_FORM_TYPE = "application/x-www-form-urlencoded"


class OAuthError(Exception):
    """An RFC 6749 §5.2 (or RFC 8707, RFC 7009) error answer."""

    def __init__(
        self,
        error: str,
        description: str,
        *,
        status: int = 400,
        headers: dict[str, str] | None = None,
        client: str = "",
    ) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.headers = headers or {}
        self.client = client
        """The client that authenticated, when one did (a metric label: the registry bounds it)."""

    @classmethod
    def invalid_client(cls, description: str = "client authentication failed") -> OAuthError:
        return cls("invalid_client", description, status=401, headers={"WWW-Authenticate": _BASIC})


class Answer(NamedTuple):
    """An answer before any transport: the direct path writes it, the ASGI app wraps it."""

    status: int
    body: bytes
    headers: dict[str, str]

    def response(self) -> Response:
        return Response(self.body, status_code=self.status, headers=self.headers, media_type="application/json")


def error_answer(exc: OAuthError) -> Answer:
    body = json.dumps({"error": exc.error, "error_description": exc.description}, separators=(",", ":"))
    return Answer(exc.status, body.encode(), {**NO_STORE, **exc.headers})


def error_response(exc: OAuthError) -> Response:
    return error_answer(exc).response()


class Form:
    """A parsed application/x-www-form-urlencoded body; single-valued parameters stay single."""

    __slots__ = ("_values",)

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        values: dict[str, list[str]] = {}
        for name, value in pairs:
            values.setdefault(name, []).append(value)
        for name, found in values.items():
            if len(found) > 1 and name not in _REPEATABLE:
                # RFC 6749 §3.2: parameters MUST NOT be included more than once.
                raise OAuthError("invalid_request", f"parameter {name!r} is repeated")
        self._values = values

    def get(self, name: str) -> str | None:
        found = self._values.get(name)
        return found[0] if found else None

    def all(self, name: str) -> list[str]:
        return list(self._values.get(name, ()))

    def __contains__(self, name: str) -> bool:
        return name in self._values


_FORMS: dict[bytes, Form] = {}
_FORMS_KEPT = 512
"""Forms parsed, by their exact body (read only once made: a Form never changes)."""


async def read_form(request: Request) -> Form:
    """The form of a request served through the ASGI app (the direct path reads its own)."""
    content_type = request.headers.get("content-type")
    _check_form_type(content_type)
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        raise OAuthError("invalid_request", "the body is too large", headers=_TOO_LARGE)
    body = b""
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise OAuthError("invalid_request", "the body is too large", headers=_TOO_LARGE)
    except ClientDisconnect:  # gone, or cut off by the request deadline: nobody reads the answer
        raise OAuthError("invalid_request", "the body did not arrive") from None
    return parse_form(content_type, body)


def body_too_large() -> OAuthError:
    return OAuthError("invalid_request", "the body is too large", headers=_TOO_LARGE)


def _check_form_type(content_type: str | None) -> None:
    if content_type is None or content_type.split(";", 1)[0].strip().lower() != _FORM_TYPE:
        raise OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")


def parse_form(content_type: str | None, body: bytes) -> Form:
    """The parameters of an application/x-www-form-urlencoded body, strictly.

    A client sends the same body with every request (its grant, scope and audience), so
    forms without a secret are kept by their exact bytes: parsing is most of what they cost."""
    if content_type != _FORM_TYPE:  # the usual case, exactly: skip the splitting
        _check_form_type(content_type)
    known = _FORMS.get(body)
    if known is not None:
        return known
    if len(body) > MAX_BODY:
        raise body_too_large()
    form = _parse(body)
    if "client_secret" not in form:  # a secret is never kept, not even in memory
        if len(_FORMS) >= _FORMS_KEPT:
            _FORMS.clear()
        _FORMS[body] = form
    return form


def _parse(body: bytes) -> Form:
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True, max_num_fields=64)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "the body is not a valid form") from None
    if any(not v.isprintable() for _, v in pairs):
        raise OAuthError("invalid_request", "a parameter holds control characters")
    return Form(pairs)


@dataclass(frozen=True)
class ClientAuth:
    """Credentials as presented, before any lookup."""

    client_id: str
    secret: str
    method: str  # client_secret_basic | client_secret_post


def credentials(header: str | None, form: Form) -> ClientAuth:
    """The credentials the request presents, by the one method it uses; OAuthError otherwise."""
    body_id, body_secret = form.get("client_id"), form.get("client_secret")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            raise OAuthError.invalid_client("unsupported client authentication method")
        if body_secret is not None:
            raise OAuthError("invalid_request", "use one client authentication method, not two")
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise OAuthError.invalid_client("malformed Basic credentials") from None
        raw_id, colon, raw_secret = decoded.partition(":")
        if not colon:
            raise OAuthError.invalid_client("malformed Basic credentials")
        # RFC 6749 §2.3.1: both halves are form-urlencoded before Basic encoding.
        client_id, secret = _form_decoded(raw_id), _form_decoded(raw_secret)
        if body_id is not None and body_id != client_id:
            raise OAuthError("invalid_request", "client_id in the body differs from the Basic credentials")
        return ClientAuth(client_id, secret, "client_secret_basic")
    if body_id is None or body_secret is None:
        raise OAuthError.invalid_client("client authentication is required (client_secret_basic or client_secret_post)")
    return ClientAuth(body_id, body_secret, "client_secret_post")


def _form_decoded(text: str) -> str:
    return unquote_plus(text) if "%" in text or "+" in text else text


def _refuse_if_limited(verdict: Verdict) -> None:
    if verdict.limited:
        RATE_LIMITED.labels("auth").inc()
        log.warning("refused a client authentication: too many failures (retry after %ss)", verdict.retry_after)
        raise OAuthError(
            "temporarily_unavailable", "too many failed authentications; retry later",
            status=429, headers={"Retry-After": str(verdict.retry_after)},
        )


def peer_address(request: Request) -> str | None:
    return request.client.host if request.client else None


async def authenticate_client(service: Service, authorization: str | None, address: str | None, form: Form, *,
                              disabled_ok: bool = False) -> Client:
    """The registered client the request proves to be, or an OAuthError.

    One Redis round trip (batched with concurrent requests' reads) fetches both failure
    counters, the log's head and the client's record, which say whether the record this
    replica checked before is still the one the log binds (:mod:`.clientview`): a disabled
    client or a rotated secret takes effect at once. Unknown client and wrong secret take the same path (a hash and a
    constant-time compare) and get the same answer. ``disabled_ok`` (RFC 7009 revocation)
    lets a disabled client through: it may still revoke its own tokens. Otherwise a disabled
    client with the right secret gets ``unauthorized_client``: it did authenticate, and RFC
    6749 §5.2 names that error for a client not allowed the grant.
    """
    limiter = service.limiter
    try:
        auth = credentials(authorization, form)
    except OAuthError as exc:
        if exc.error == "invalid_client":
            _refuse_if_limited(await limiter.check(None, address))
            await limiter.record_failure(None, address)
            AUTH_FAILURES.labels("malformed").inc()
        raise
    client_key, address_key = limiter.keys(auth.client_id, address)
    names = service.names
    unused = names.ratelimit("none", "-")
    counted, raw = await service.lookup.many(
        ("MGET", names.head, client_key or unused, address_key or unused), ("HGET", names.clients, auth.client_id)
    )
    for reply in (counted, raw):
        if isinstance(reply, Exception):
            raise reply
    head, client_count, address_count = counted
    _refuse_if_limited(limiter.verdict(client_count, address_count))
    client = await service.clients.client(auth.client_id, head, raw)
    if not secret_matches(client, auth.secret) or client is None:
        await limiter.record_failure(auth.client_id, address)
        # For the security team: who failed, from where; never the secret. repr() keeps a
        # hostile client_id from forging log lines.
        reason = "unknown_client" if client is None else "wrong_secret"
        AUTH_FAILURES.labels(reason).inc()
        log.info("client authentication failed: client_id %.80r from %s (%s)", auth.client_id, address, reason)
        raise OAuthError.invalid_client()
    if client.disabled and not disabled_ok:
        raise OAuthError("unauthorized_client", "this client is disabled", client=client.client_id)
    return client

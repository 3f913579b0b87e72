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
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote_plus

from prometheus_client import Counter
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from ..clients import Client, secret_matches
from ..ratelimit import Verdict

if TYPE_CHECKING:
    from . import Service

__all__ = [
    "MAX_BODY",
    "NO_STORE",
    "ClientAuth",
    "Form",
    "OAuthError",
    "authenticate_client",
    "error_response",
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


def error_response(exc: OAuthError) -> Response:
    body = {"error": exc.error, "error_description": exc.description}
    return JSONResponse(body, status_code=exc.status, headers={**NO_STORE, **exc.headers})


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


async def read_form(request: Request) -> Form:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")
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


def _credentials(request: Request, form: Form) -> ClientAuth:
    header = request.headers.get("authorization")
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
        client_id, secret = unquote_plus(raw_id), unquote_plus(raw_secret)
        if body_id is not None and body_id != client_id:
            raise OAuthError("invalid_request", "client_id in the body differs from the Basic credentials")
        return ClientAuth(client_id, secret, "client_secret_basic")
    if body_id is None or body_secret is None:
        raise OAuthError.invalid_client("client authentication is required (client_secret_basic or client_secret_post)")
    return ClientAuth(body_id, body_secret, "client_secret_post")


def _refuse_if_limited(verdict: Verdict) -> None:
    if verdict.limited:
        RATE_LIMITED.labels("auth").inc()
        log.warning("refused a client authentication: too many failures (retry after %ss)", verdict.retry_after)
        raise OAuthError(
            "temporarily_unavailable", "too many failed authentications; retry later",
            status=429, headers={"Retry-After": str(verdict.retry_after)},
        )


def _address(request: Request) -> str | None:
    return request.client.host if request.client else None


async def authenticate_client(service: Service, request: Request, form: Form, *,
                              disabled_ok: bool = False) -> Client:
    """The registered client the request proves to be, or an OAuthError.

    One Redis read (a script, batched with concurrent requests' reads) fetches the client and
    both failure counters, so a disabled client or a rotated secret takes effect at once. Unknown client and
    wrong secret take the same path (a hash and a constant-time compare) and get the same
    answer. ``disabled_ok`` (RFC 7009 revocation) lets a disabled client through: it may
    still revoke its own tokens. Otherwise a disabled client with the right secret gets
    ``unauthorized_client``: it did
    authenticate, and RFC 6749 §5.2 names that error for a client not allowed the grant.
    """
    limiter = service.limiter
    address = _address(request)
    try:
        auth = _credentials(request, form)
    except OAuthError as exc:
        if exc.error == "invalid_client":
            _refuse_if_limited(await limiter.check(None, address))
            await limiter.record_failure(None, address)
            AUTH_FAILURES.labels("malformed").inc()
        raise
    client_key, address_key = limiter.keys(auth.client_id, address)
    unused = service.names.ratelimit("none", "-")
    raw, client_count, address_count = await service.lookup(
        keys=[service.names.clients, client_key or unused, address_key or unused], args=[auth.client_id]
    )
    _refuse_if_limited(limiter.verdict(client_count, address_count))
    client = await service.bound_client(raw, auth.client_id)
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

"""What a request passes before the app may read its body.

FastAPI reads and parses a body before any dependency runs, so a router-level token check
comes too late: unauthenticated 300 MiB bodies were read into memory. Here, in front of the
app, at the ASGI level:

- an ``/admin`` request is authenticated from its headers alone; a refusal is answered
  without reading a byte of the body, and the connection is closed so none is waited for;
- every body is bounded (the declared length first, then the bytes as they arrive): 413;
- an admin body must be one strict JSON object (no duplicate members, no NaN): 400, as
  everywhere else keyherald reads JSON. The app then receives the bytes already read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from keyherald.shared.encoding import loads_object

from .admin import ADMIN_CLAIMS, AdminDenied, check_admin
from .oauth import MAX_BODY

if TYPE_CHECKING:
    from . import Service

__all__ = [
    "BULK_PATH",
    "MAX_ADMIN_BODY",
    "MAX_BODY",
    "MAX_BULK_BODY",
    "BodyTooLarge",
    "ClientGone",
    "admin_gate",
    "declared_length",
    "has_body",
    "read_body",
    "too_large",
]

MAX_ADMIN_BODY = MAX_BODY
"""16 KiB, as the OAuth forms: the largest admin body (a token to revoke) is under 9 KiB."""
MAX_BULK_BODY = 64 << 20
"""A bulk revocation (``/admin/revoke/tokens``): a million jtis with their ends. Read only
once the admin token checked out, like every admin body."""
BULK_PATH = "/admin/revoke/tokens"

_App = Callable[[Scope, Receive, Send], Awaitable[None]]
_CLOSE = {"Connection": "close"}


class BodyTooLarge(Exception):
    """The body exceeds its bound."""


class ClientGone(Exception):
    """The client went away (or was cut off) before its body arrived."""


def declared_length(scope: Scope) -> int | None:
    """The Content-Length, None when absent; -1 when it is not a number (refuse it)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else -1
    return None


def has_body(scope: Scope) -> bool:
    length = declared_length(scope)
    if length is not None:
        return length != 0
    return any(name == b"transfer-encoding" for name, _ in scope["headers"])


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole body, refused with BodyTooLarge as soon as it passes ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _error(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": error, "error_description": description}, status_code=status, headers=headers)


def too_large(limit: int) -> Response:
    return _error(413, "invalid_request", f"the body is too large (at most {limit} bytes)", _CLOSE)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the body already read, then defers to the server."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def admin_gate(service: Service, scope: Scope, receive: Receive, send: Send, app: _App) -> None:
    """Authenticate an ``/admin`` request from its headers, then bound and check its body."""
    body_expected = has_body(scope)
    try:
        claims = check_admin(service, Request(scope))
    except AdminDenied as denied:
        response = denied.response()
        if body_expected:  # nothing of it will be read: do not wait for it either
            response.headers.update(_CLOSE)
        await response(scope, receive, send)
        return
    declared = declared_length(scope)
    limit = MAX_BULK_BODY if scope["path"] == BULK_PATH else MAX_ADMIN_BODY
    if declared is not None and (declared < 0 or declared > limit):
        await too_large(limit)(scope, receive, send)
        return
    try:
        body = await read_body(receive, limit)
    except BodyTooLarge:
        await too_large(limit)(scope, receive, send)
        return
    except ClientGone:
        return
    if body:
        try:
            loads_object(body)
        except ValueError:
            await _error(400, "invalid_request", "the body must be one JSON object (strict: no duplicate"
                         " members, no NaN)")(scope, receive, send)
            return
    state: dict[str, Any] = scope.setdefault("state", {})
    state[ADMIN_CLAIMS] = claims
    await app(scope, _replay(body, receive), send)

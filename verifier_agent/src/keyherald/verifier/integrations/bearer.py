"""RFC 6750 bearer-token checks with no framework: the decision every integration shares.

The caller learns only the RFC 6750 error code (``invalid_request``, ``invalid_token``,
``insufficient_scope``); the reason (``expired``, ``revoked``...) goes to the service's log.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import InvalidToken

__all__ = ["Challenge", "TokenVerifier", "authorize", "granted_scopes"]

log = logging.getLogger("keyherald.verifier.auth")


class TokenVerifier(Protocol):
    def verify(self, token: str | bytes) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Challenge:
    """A refusal: the HTTP status and the WWW-Authenticate value to send."""

    status: int
    www_authenticate: str
    error: str | None

    @property
    def body(self) -> dict[str, str]:
        return {"error": self.error or "unauthorized"}


def _challenge(status: int, error: str | None = None, realm: str | None = None, scope: str | None = None) -> Challenge:
    params = [f'realm="{realm}"'] if realm else []
    if error:
        params.append(f'error="{error}"')
    if scope:
        params.append(f'scope="{scope}"')
    return Challenge(status, "Bearer" + (" " + ", ".join(params) if params else ""), error)


def granted_scopes(claims: dict[str, Any]) -> frozenset[str]:
    """RFC 9068 ``scope`` (space-separated string); a list in ``scope`` or ``scp`` is read too."""
    value = claims.get("scope", claims.get("scp"))
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(v for v in value if isinstance(v, str))
    return frozenset()


def authorize(
    verifier: TokenVerifier,
    authorization: str | None,
    scopes: Collection[str] = (),
    *,
    realm: str | None = None,
) -> dict[str, Any] | Challenge:
    """The verified claims, or the Challenge to answer with."""
    if not authorization:
        return _challenge(401, realm=realm)
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return _challenge(401, realm=realm)  # another scheme: no bearer credentials at all
    token = token.strip()
    if not token or " " in token:
        log.info("refused a request: malformed Authorization header")
        return _challenge(400, "invalid_request", realm)
    try:
        claims = verifier.verify(token)
    except InvalidToken as exc:
        log.info("refused a token: %s", exc.reason)
        return _challenge(401, "invalid_token", realm)
    missing = set(scopes) - granted_scopes(claims)
    if missing:
        log.info("refused a token: scope %s missing (sub %s)", " ".join(sorted(missing)), claims.get("sub"))
        return _challenge(403, "insufficient_scope", realm, " ".join(sorted(scopes)))
    return claims

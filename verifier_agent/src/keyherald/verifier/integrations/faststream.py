"""FastStream: a middleware that validates a token carried in a message header (extra ``faststream``).

    from keyherald.verifier.integrations.faststream import TokenMiddleware

    broker = RedisBroker(url, middlewares=[TokenMiddleware(agent, scopes=["orders:write"])])

    @broker.subscriber("orders")
    async def handle(body: dict, claims: dict = Context("claims")) -> None: ...

A message without a valid token (header ``authorization``, with or without the ``Bearer ``
prefix) never reaches the handler: it is rejected (``RejectMessage``: acknowledged and
dropped where the broker acknowledges) and the reason is logged, never the token.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

try:
    from faststream import BaseMiddleware
    from faststream.exceptions import RejectMessage
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "keyherald.verifier.integrations.faststream needs FastStream: "
        "pip install 'keyherald-verifier[faststream]'"
    ) from exc

from ..errors import InvalidToken
from .bearer import TokenVerifier, granted_scopes

__all__ = ["TokenMiddleware"]

log = logging.getLogger("keyherald.verifier.auth")


class TokenMiddleware:
    """A middleware factory for a FastStream broker or subscriber."""

    def __init__(
        self,
        agent: TokenVerifier,
        *,
        header: str = "authorization",
        scopes: Collection[str] = (),
        context_key: str = "claims",
    ) -> None:
        self.agent = agent
        self.header = header.lower()
        self.scopes = frozenset(scopes)
        self.context_key = context_key

    def __call__(self, msg: Any, /, *, context: Any) -> _TokenCheck:
        return _TokenCheck(msg, context=context, factory=self)

    def check(self, headers: Any) -> dict[str, Any]:
        """The verified claims; raises InvalidToken (reason ``insufficient_scope`` for scopes)."""
        raw = None
        if hasattr(headers, "items"):
            for name, value in headers.items():
                if isinstance(name, str) and name.lower() == self.header:
                    raw = value
                    break
        if isinstance(raw, bytes):
            raw = raw.decode("latin-1")
        if not isinstance(raw, str) or not raw.strip():
            raise _MissingToken("no token in the message headers")
        scheme, _, rest = raw.strip().partition(" ")
        token = rest.strip() if scheme.lower() == "bearer" else raw.strip()
        claims = self.agent.verify(token)
        if not self.scopes <= granted_scopes(claims):
            raise _InsufficientScope("token lacks a required scope")
        return claims


class _MissingToken(InvalidToken):
    reason = "missing"


class _InsufficientScope(InvalidToken):
    reason = "insufficient_scope"


class _TokenCheck(BaseMiddleware):
    def __init__(self, msg: Any, /, *, context: Any, factory: TokenMiddleware) -> None:
        super().__init__(msg, context=context)
        self.factory = factory

    async def consume_scope(self, call_next: Any, msg: Any) -> Any:
        try:
            claims = self.factory.check(getattr(msg, "headers", None))
        except InvalidToken as exc:
            log.info("refused a message: %s", exc.reason)
            raise RejectMessage from None
        with self.context.scope(self.factory.context_key, claims):
            return await call_next(msg)

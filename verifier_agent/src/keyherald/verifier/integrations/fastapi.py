"""FastAPI and Starlette: a dependency and an ASGI middleware (extra ``fastapi``).

    from keyherald.verifier.integrations.fastapi import BearerAuthMiddleware, require_token

    @app.get("/orders")
    async def orders(claims: Annotated[dict, Depends(require_token(agent, scopes=["orders:read"]))]):
        ...

    app.add_middleware(BearerAuthMiddleware, agent=agent, exempt=["/healthz"])

Both put the verified claims on ``request.state.claims``. Refusals follow RFC 6750: 401
with ``WWW-Authenticate: Bearer`` when no token came, 401 ``error="invalid_token"`` for a
refused one, 403 ``error="insufficient_scope"`` with the required scopes. The reason goes
to the log (``keyherald.verifier.auth``), never to the caller.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any

try:
    from fastapi import HTTPException, Request
    from starlette.responses import JSONResponse
    from starlette.types import ASGIApp, Receive, Scope, Send
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "keyherald.verifier.integrations.fastapi needs FastAPI: "
        "pip install 'keyherald-verifier[fastapi]'"
    ) from exc

from .bearer import Challenge, TokenVerifier, authorize

__all__ = ["BearerAuthMiddleware", "require_token"]


def require_token(
    agent: TokenVerifier, scopes: Iterable[str] = (), *, realm: str | None = None
) -> Callable[[Request], Awaitable[dict[str, Any]]]:
    """A dependency returning the verified claims (an async def: verify is CPU-only and fast,
    so it runs on the event loop rather than in the thread pool)."""
    required = tuple(scopes)

    async def verified_claims(request: Request) -> dict[str, Any]:
        result = authorize(agent, request.headers.get("authorization"), required, realm=realm)
        if isinstance(result, Challenge):
            raise HTTPException(
                result.status, detail=result.error or "unauthorized",
                headers={"WWW-Authenticate": result.www_authenticate},
            )
        request.state.claims = result
        return result

    return verified_claims


class BearerAuthMiddleware:
    """Refuses every HTTP request (and WebSocket) without a valid token, except ``exempt`` paths."""

    def __init__(
        self,
        app: ASGIApp,
        agent: TokenVerifier,
        *,
        scopes: Collection[str] = (),
        exempt: Collection[str] = (),
        realm: str | None = None,
    ) -> None:
        self.app = app
        self.agent = agent
        self.scopes = tuple(scopes)
        self.exempt = frozenset(exempt)
        self.realm = realm

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get("path") in self.exempt:
            await self.app(scope, receive, send)
            return
        authorization = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        result = authorize(self.agent, authorization, self.scopes, realm=self.realm)
        if isinstance(result, Challenge):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            response = JSONResponse(
                result.body, status_code=result.status, headers={"WWW-Authenticate": result.www_authenticate}
            )
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["claims"] = result
        await self.app(scope, receive, send)

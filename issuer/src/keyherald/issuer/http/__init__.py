"""The issuer's HTTP API, served by every replica (``keyherald issuer run``, ``keyherald dev``).

    POST /token                                  OAuth 2.0 client credentials (RFC 6749 §4.4)
    POST /revoke                                 token revocation by its client (RFC 7009)
    GET  /.well-known/jwks.json                  the keys a verifier may need now
    GET  /.well-known/oauth-authorization-server metadata (RFC 8414)
    GET  /healthz                                role, Redis reachability, seq
    GET  /metrics                                Prometheus metrics
    /admin/...                                   operator actions, admin-scoped tokens (RFC 6750)
    /console/...                                 the operator console: pages for people (docs/console.md)

docs/api.md documents each; FastAPI serves the OpenAPI document at /openapi.json.
No answer carries a stack trace: Redis trouble is a 503, anything unexpected a bare 500.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from keyherald.shared.clock import Clock
from keyherald.shared.connect import node_client
from keyherald.shared.names import Names
from keyherald.shared.state import State

from ..clients import Client
from ..errors import IssuerError, NotReplicated
from ..ratelimit import AuthFailureLimiter
from ..settings import IssuerSettings
from .admin import AdminDenied, admin_router
from .batching import LookupBatcher
from .clientview import ClientView
from .gate import admin_gate, declared_length, too_large
from .oauth import MAX_BODY, Form
from .openapi import FORM_BODY, REVOKE_BODY, errors, prune_validation_errors
from .revoke import revocation_endpoint
from .token import ClaimsTemplate, audiences_for, scopes_for, token_endpoint
from .wellknown import jwks_endpoint, metadata_endpoint

if TYPE_CHECKING:
    from ..runtime import IssuerRuntime

__all__ = ["Service", "create_app"]

log = logging.getLogger("keyherald.issuer")

REDIS_SLOTS = 48
"""Token and revocation requests using Redis at once, per replica. redis-py's pool holds 100
connections and refuses (it does not queue) beyond; the rest serve the duty loop, the
signer, the event subscriber and the admin agent."""

class Service:
    """What the handlers share: the runtime, its settings, Redis and the rate limiter."""

    def __init__(self, runtime: IssuerRuntime) -> None:
        self.runtime = runtime
        self.settings: IssuerSettings = runtime.settings
        self.clock: Clock = runtime.clock
        self._limiter: AuthFailureLimiter | None = None
        self.lookup = LookupBatcher(lambda: node_client(self.redis, self.settings.names.head))
        """The reads of each token request (the log's head, both failure counters), batched."""
        runtime.closing.append(self.lookup.close)
        self.clients = ClientView(runtime)
        self._templates: dict[tuple[str, str, tuple[str, ...], tuple[str, ...]], ClaimsTemplate] = {}
        self._shapes: dict[tuple[str, str, Form], ClaimsTemplate] = {}
        self.last_state: State | None = None
        self.redis_slots = asyncio.Semaphore(REDIS_SLOTS)
        """Requests past this many wait their turn, instead of exhausting the Redis pool."""

    def template(self, client: Client, audiences: list[str], scopes: list[str]) -> ClaimsTemplate:
        """The claims of this client's tokens for this shape, made once (by its record's tag:
        a changed record makes new ones)."""
        key = (client.client_id, client.mac, tuple(audiences), tuple(scopes))
        found = self._templates.get(key)
        if found is None:
            if len(self._templates) >= 4096:
                self._templates.clear()
            found = self._templates[key] = ClaimsTemplate(
                client, audiences, scopes, issuer=self.settings.issuer, max_ttl=int(self.settings.token_ttl)
            )
        return found

    def template_for(self, client: Client, form: Form) -> ClaimsTemplate:
        """:meth:`template` for what ``form`` asks (the audience and scope policy applied;
        OAuthError when it refuses), kept by the form: a client sends the same one each time."""
        key = (client.client_id, client.mac, form)
        found = self._shapes.get(key)
        if found is None:
            found = self.template(client, audiences_for(client, form), scopes_for(client, form))
            if len(self._shapes) >= 4096:
                self._shapes.clear()
            self._shapes[key] = found
        return found

    @property
    def redis(self) -> Redis:
        return self.runtime.ctx.redis

    @property
    def names(self) -> Names:
        return self.runtime.ctx.names

    @property
    def limiter(self) -> AuthFailureLimiter:
        if self._limiter is None:
            s = self.settings
            self._limiter = AuthFailureLimiter(
                self.redis, self.names, per_client=s.auth_failures_per_client,
                per_address=s.auth_failures_per_address, clock=self.clock,
            )
        return self._limiter

    async def state(self) -> State:
        state = await self.runtime.ctx.log.sync()
        self.last_state = state
        return state

    async def state_or_last(self) -> State:
        """The current verified state, or while Redis is unreachable or holds what this
        replica refuses, the last one verified: keys a verifier needs do not vanish."""
        try:
            return await self.state()
        except (RedisError, IssuerError):
            last = self.last_state or self.runtime.ctx.log.state
            if last is None or last.seq == 0:
                raise
            return last

    @staticmethod
    def json(
        body: Any, *, status: int = 200, headers: dict[str, str] | None = None, media_type: str = "application/json"
    ) -> Response:
        content = json.dumps(body, separators=(",", ":")).encode()
        return Response(content, status_code=status, headers=headers, media_type=media_type)


class IssuerApp(FastAPI):
    """FastAPI, with the token endpoint's hot path served straight from the ASGI call.

    POST /token is most of the traffic. The server answers it straight from the connection
    (:mod:`.direct`); what still comes through ASGI (pipelined requests, tests on the app)
    skips the framework's middleware, routing and dependency machinery here. The route stays
    declared below, so the OpenAPI document still describes it, and it answers the same.
    """

    service: Service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        path = scope["path"]
        if path == "/token" and scope["method"] == "POST":
            response = await token_endpoint(self.service, Request(scope, receive))
            await response(scope, receive, send)
        elif path.startswith("/admin"):  # the token before the body (see .gate)
            await admin_gate(self.service, scope, receive, send, super().__call__)
        elif (length := declared_length(scope)) is not None and not 0 <= length <= MAX_BODY:
            await too_large(MAX_BODY)(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            prune_validation_errors(super().openapi())
        return super().openapi()


def _redis_down(exc: RedisError) -> Response:
    log.warning("request failed: Redis unreachable (%s)", type(exc).__name__)
    body = {"error": "temporarily_unavailable", "error_description": "the issuer cannot reach its store"}
    return JSONResponse(body, status_code=503, headers={"Retry-After": "1", "Cache-Control": "no-store"})


def _log_unusable(exc: IssuerError) -> Response:
    log.warning("request failed: %s", exc)
    description, retry = "the issuer cannot use its log right now", 1
    if isinstance(exc, NotReplicated):  # in the log, but a failover could still lose it: not done
        description, retry = "too few Redis replicas confirmed the revocation in time; it is not done: retry", \
            exc.retry_after
    body = {"error": "temporarily_unavailable", "error_description": description}
    return JSONResponse(body, status_code=503, headers={"Retry-After": str(retry), "Cache-Control": "no-store"})


def create_app(runtime: IssuerRuntime) -> FastAPI:
    service = Service(runtime)
    app = IssuerApp(
        title="keyherald issuer",
        summary="Short-lived service tokens (OAuth 2.0 client credentials), their keys and revocation.",
        version="0.1.0",
    )

    app.service = service
    from prometheus_client import CollectorRegistry

    from .metrics import RuntimeCollector, metrics_response

    registry = CollectorRegistry()
    registry.register(RuntimeCollector(runtime))

    @app.exception_handler(RedisError)
    async def redis_down(request: Request, exc: RedisError) -> Response:
        return _redis_down(exc)

    @app.exception_handler(IssuerError)
    async def log_unusable(request: Request, exc: IssuerError) -> Response:
        return _log_unusable(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        # An admin caller was authenticated by the gate before its body was read. Never
        # echo the input.
        body = {"error": "invalid_request", "error_description": "the request is malformed"}
        return JSONResponse(body, status_code=400)

    @app.exception_handler(AdminDenied)
    async def admin_denied(request: Request, exc: AdminDenied) -> Response:
        return exc.response()

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": "server_error"}, status_code=500)

    @app.post(
        "/token", tags=["oauth"], openapi_extra=FORM_BODY, responses=errors(400, 401, 429, 503),
        summary="client credentials grant: a short-lived access token (RFC 6749 §4.4, RFC 9068)",
    )
    async def token(request: Request) -> Response:
        return await token_endpoint(service, request)

    @app.post("/revoke", tags=["oauth"], openapi_extra=REVOKE_BODY, responses=errors(400, 401, 429, 503),
              summary="revoke a token of the authenticated client (RFC 7009)")
    async def revoke(request: Request) -> Response:
        return await revocation_endpoint(service, request)

    @app.head("/.well-known/jwks.json", tags=["discovery"], responses=errors(304, 503), operation_id="jwks_head",
              summary="the JWKS's headers only: ETag, Cache-Control")
    @app.get("/.well-known/jwks.json", tags=["discovery"], responses=errors(304, 503), operation_id="jwks",
             summary="every key a verifier may need now (strong ETag; If-None-Match answers 304)")
    async def jwks(request: Request) -> Response:
        return await jwks_endpoint(service, request)

    @app.get("/.well-known/oauth-authorization-server", tags=["discovery"], summary="RFC 8414 metadata")
    async def oauth_metadata() -> Response:
        return await metadata_endpoint(service)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics of this replica (text format)")
    async def metrics() -> Response:
        return metrics_response(registry)

    @app.get("/healthz", tags=["operations"], responses=errors(503),
             summary="role, Redis reachability, seq; 503 (with the reason) when this replica cannot append")
    async def healthz() -> Response:
        state = runtime.ctx.log.state if runtime.ctx.log_ready else None
        body: dict[str, Any] = {
            "role": runtime.role, "redis": runtime.redis_ok, "seq": runtime.seq,
            "log": state.log if state is not None else None, "ok": runtime.healthy,
        }
        if runtime.worker is not None:
            body["worker"] = runtime.worker
        if not runtime.healthy:
            body["problem"] = runtime.problem or (
                "Redis is unreachable" if not runtime.redis_ok else "the duty cycle keeps failing"
            )
        unread = runtime.ctx.log.unread if runtime.ctx.log_ready else []
        if unread:
            body["lost_unread"] = [{"log": log_id, "seq": seq} for log_id, seq in unread]
        return JSONResponse(body, status_code=200 if runtime.healthy else 503)

    app.include_router(admin_router(service))
    if service.settings.console:
        from .console import mount_console

        mount_console(app, service)
    return app

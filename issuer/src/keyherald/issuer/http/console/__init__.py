"""The operator console: a web page every issuer replica serves at ``/console``.

Keys (a timeline, rotation), the fleet (live), the events, revocations with their
confirmation by the fleet, clients, and this replica's health: for a person in an incident,
what ``keyherald keys|fleet|revoke|clients`` give on a terminal. It acts through the same
operations the admin API uses (:class:`...admin.Admin`, the client registry), and grants
nothing more: signing in takes admin client credentials or an admin token.

    pages.py     what each page shows (GET), and the JSON its script polls
    actions.py   what each form does (POST): confirmed first when it destroys
    signin.py    sign-in (rate-limited as the token endpoint) and sign-out
    access.py    the cookie, CSRF and origin checks, the security headers
    sessions.py  sessions in Redis, sealed under the KEK, found by the hash of their id
    timeline.py  the keys as a timeline (pure)
    views.py     reading what the pages show
    render.py    templates and static files from the package

``KEYHERALD_CONSOLE=off`` leaves every ``/console`` path unserved (404). docs/console.md shows it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from ...errors import IssuerError
from ...kek import KeyEncryptionKey
from .access import Forbidden, current_session
from .render import Renderer, json_response, redirect
from .sessions import Session, SessionStore

if TYPE_CHECKING:
    from fastapi import FastAPI

    from .. import Service

__all__ = ["Console", "Route", "mount_console"]

log = logging.getLogger("keyherald.issuer.console")

Handler = Callable[["Console", Request, Session], Awaitable[Response]]
Open = Callable[["Console", Request], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]
Route = tuple[str, Endpoint, list[str]]
"""A path, what answers it, and its methods."""


class Console:
    """What the console's handlers share: the service, the templates, the session store."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.render = Renderer()
        self._store: SessionStore | None = None

    @property
    def store(self) -> SessionStore:
        if self._store is None:  # the KEK is read once the replica runs
            s = self.service.settings
            key = KeyEncryptionKey.from_settings(s).derive(f"keyherald/{self.service.names.namespace}/console-session")
            self._store = SessionStore(self.service.redis, self.service.names, key, self.service.clock,
                                       s.console_idle_timeout)
        return self._store

    def signed_in(self, fn: Handler, *, api: bool = False) -> Callable[[Request], Awaitable[Response]]:
        """``fn`` for a request with a live admin session; otherwise the sign-in page (or 401)."""

        async def handle(request: Request) -> Response:
            async def run() -> Response:
                session = await current_session(request, self.service, self.store)
                if session is None:
                    if api:
                        return json_response({"error": "signed_out"}, 401)
                    return redirect("/console/signin")
                return await fn(self, request, session)

            return await self._guarded(request, run)

        return handle

    def open(self, fn: Open) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            return await self._guarded(request, lambda: fn(self, request))

        return handle

    async def _guarded(self, request: Request, run: Callable[[], Awaitable[Response]]) -> Response:
        try:
            return await run()
        except Forbidden as exc:
            log.warning("console refused %s %s: %s", request.method, request.url.path, exc)
            return self.render.page("refused.html", 403, title="Refused", reason=str(exc))
        except (RedisError, OSError):
            log.warning("console: Redis unreachable on %s %s", request.method, request.url.path)
            return self.render.page("refused.html", 503, title="Redis unreachable",
                                    reason="This replica cannot reach Redis right now. Nothing was changed."
                                    " Retry in a few seconds; if it persists, check Redis and /healthz.")
        except IssuerError as exc:
            log.warning("console: %s on %s %s", exc, request.method, request.url.path)
            return self.render.page("refused.html", 503, title="The log is unusable",
                                    reason=f"This replica cannot use the log right now: {exc}")


def mount_console(app: FastAPI, service: Service) -> None:
    """Serve the console on ``app`` (not in the OpenAPI document: it is a page, not an API)."""
    from . import actions, pages, signin

    console = Console(service)
    for path, handler, methods in (
        *signin.routes(console), *pages.routes(console), *actions.routes(console),
    ):
        app.add_route(path, handler, methods=methods, include_in_schema=False)

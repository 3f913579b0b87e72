"""uvicorn, set up for a service on an untrusted network.

uvicorn alone keeps a connection that never finishes its request headers open forever, and
believes ``X-Forwarded-For`` from 127.0.0.1 (so a local caller could pose as any address to
the rate limits). Here:

- a request must arrive whole (headers and body) within ``KEYHERALD_HTTP_HEADER_TIMEOUT`` of
  the connection opening or of the previous answer, else the connection is closed;
- an idle keep-alive connection is closed after ``KEYHERALD_HTTP_KEEPALIVE_TIMEOUT``;
- ``X-Forwarded-For`` is read only from ``KEYHERALD_TRUSTED_PROXIES`` (none by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..settings import IssuerSettings

__all__ = ["QuietServer", "RequestDeadlineProtocol", "serve", "server_config"]

class QuietServer(uvicorn.Server):
    """uvicorn inside our process: signals belong to the FastStream app, not to uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class RequestDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol, with a deadline for each request to arrive whole.

    The deadline is armed whenever the connection waits for a request (on connect, and after
    each answer) and disarmed once the request's last byte is in: a slow-headers or
    slow-body client is cut off, a slow handler is not.
    """

    request_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:
            self._arm()


def _protocol(timeout: float) -> type[RequestDeadlineProtocol]:
    return type("RequestDeadline", (RequestDeadlineProtocol,), {"request_timeout": timeout})


def server_config(app: Any, settings: IssuerSettings) -> uvicorn.Config:
    proxies = settings.trusted_proxy_list
    return uvicorn.Config(
        app,
        log_level="warning",
        log_config=None,  # uvicorn's lines go through the process's format (keyherald.shared.logs)
        lifespan="off",
        access_log=False,
        http=_protocol(settings.http_header_timeout),
        timeout_keep_alive=max(1, round(settings.http_keepalive_timeout)),  # uvicorn counts whole seconds
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
        server_header=False,
    )


async def serve(app: Any, settings: IssuerSettings, listener: socket.socket) -> None:
    """Serve ``app`` on ``listener`` until cancelled."""
    server = QuietServer(server_config(app, settings))
    try:
        await server.serve(sockets=[listener])
    finally:
        server.should_exit = True
        listener.close()

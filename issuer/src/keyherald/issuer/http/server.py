"""uvicorn, set up for a service on an untrusted network.

uvicorn alone keeps a connection that never finishes its request headers open forever, and
believes ``X-Forwarded-For`` from 127.0.0.1 (so a local caller could pose as any address to
the rate limits). Here (the protocol is in :mod:`.connection`, with POST /token's direct path):

- a request must arrive whole (headers and body) within ``KEYHERALD_HTTP_HEADER_TIMEOUT`` of
  the connection opening or of the previous answer, else the connection is closed;
- an idle keep-alive connection is closed after ``KEYHERALD_HTTP_KEEPALIVE_TIMEOUT``;
- ``X-Forwarded-For`` is read only from ``KEYHERALD_TRUSTED_PROXIES`` (none by default).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

from ..settings import IssuerSettings
from .connection import RequestDeadlineProtocol, protocol_class
from .express import ExpressLane

__all__ = ["QuietServer", "RequestDeadlineProtocol", "serve", "server_config"]


class QuietServer(uvicorn.Server):
    """uvicorn inside our process: signals belong to the FastStream app, not to uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def server_config(app: Any, settings: IssuerSettings) -> uvicorn.Config:
    """``app`` with a ``service`` (the issuer's) gets POST /token answered directly."""
    proxies = settings.trusted_proxy_list
    service = getattr(app, "service", None)
    answer = ExpressLane(service) if service is not None else None
    return uvicorn.Config(
        app,
        log_level="warning",
        log_config=None,  # uvicorn's lines go through the process's format (keyherald.shared.logs)
        lifespan="off",
        access_log=False,
        http=protocol_class(settings.http_header_timeout, answer_token=answer, trusted_proxies=proxies),
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

"""Helpers for the token-service tests: a started issuer runtime, its app over ASGI, clients.

Import the fixtures you need into a test module (``from tests.tokenservice import issuer``).
"""

from __future__ import annotations

import asyncio
import base64
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote_plus

import httpx
import pytest

from keyherald.issuer.http import create_app
from keyherald.issuer.runtime import IssuerRuntime
from keyherald.issuer.settings import IssuerSettings
from keyherald.shared.clock import Clock, ManualClock
from keyherald.verifier import VerifierAgent, VerifierSettings

__all__ = [
    "agent",
    "ADDRESS",
    "add_client",
    "asgi_client",
    "basic",
    "eventually",
    "http",
    "issuer",
    "running_issuer",
    "socket_client",
]

ADDRESS = "192.0.2.10"


@asynccontextmanager
async def running_issuer(
    settings: IssuerSettings, clock: Clock, *, serve_http: bool = False
) -> AsyncIterator[IssuerRuntime]:
    runtime = IssuerRuntime(settings, clock=clock, serve_http=serve_http)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


def asgi_client(runtime: IssuerRuntime, *, address: str = ADDRESS) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(runtime), client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://issuer.test")


def basic(client_id: str, secret: str) -> dict[str, str]:
    """client_secret_basic as RFC 6749 §2.3.1 says: form-urlencode both halves first."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


async def add_client(runtime: IssuerRuntime, name: str, audiences: list[str], scopes: list[str] = (),  # type: ignore[assignment]
                     ttl: int | None = None) -> str:
    """Register a client; returns its secret."""
    registry = runtime.ctx.clients()
    return (await registry.create(name, audiences=audiences, scopes=scopes, ttl=ttl)).secret


async def eventually(check: Callable[[], Awaitable[Any]], *, within: float = 1.0, every: float = 0.01) -> Any:
    """Poll ``check`` until it returns a truthy value or the deadline passes (real time)."""
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {within}s")
        await asyncio.sleep(every)


@pytest.fixture
async def issuer(issuer_settings: IssuerSettings, clock: ManualClock) -> AsyncIterator[IssuerRuntime]:
    async with running_issuer(issuer_settings, clock) as runtime:
        yield runtime


@asynccontextmanager
async def socket_client(runtime: IssuerRuntime) -> AsyncIterator[httpx.AsyncClient]:
    """The runtime's app served by uvicorn on a real socket, as in production: POST /token
    goes through the connection's direct path (keyherald.issuer.http.connection) and its
    express lane (keyherald.issuer.http.express)."""
    from keyherald.issuer.http.server import QuietServer, server_config

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    app: Any = create_app(runtime)
    await app.service.lookup("PING")  # connected from the start: requests take the express lane at once
    server = QuietServer(server_config(app, runtime.settings))
    task = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            yield client
    finally:
        server.should_exit = True
        await task
        listener.close()


@pytest.fixture(params=["asgi", "socket"])
async def http(issuer: IssuerRuntime, request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the issuer's HTTP API, twice: through the ASGI app, and over a socket
    (where POST /token takes the direct path): both must answer alike."""
    opened = asgi_client(issuer) if request.param == "asgi" else socket_client(issuer)
    async with opened as client:
        yield client


@pytest.fixture
async def agent(issuer: IssuerRuntime, issuer_settings: IssuerSettings,
                clock: ManualClock) -> AsyncIterator[VerifierAgent]:
    settings = VerifierSettings(
        redis_url=issuer_settings.redis_url, namespace=issuer_settings.namespace, issuer=issuer_settings.issuer,
        audience="inventory", trust_anchor=issuer.ctx.control.anchor.thumbprint, _env_file=None,
    )
    async with VerifierAgent(settings, clock=clock) as running:
        yield running

"""Fixtures shared by every test package: a real server, a namespace, issuer settings, a clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from keyherald.issuer.context import IssuerContext
from keyherald.issuer.kek import generate_kek_text
from keyherald.issuer.settings import IssuerSettings
from keyherald.shared.clock import ManualClock

from .servers import cleanup_namespace, fresh_namespace, server_url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with server_url() as url:
        yield url


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    ns = fresh_namespace()
    yield ns
    cleanup_namespace(redis_url, ns)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def kek() -> str:
    return generate_kek_text()


@pytest.fixture
def issuer_settings(redis_url: str, namespace: str, kek: str) -> IssuerSettings:
    return IssuerSettings(
        redis_url=redis_url,
        namespace=namespace,
        issuer="https://issuer.test",
        kek=kek,
        rotation_period="60s",
        token_ttl="5m",
        heartbeat_interval="2s",
        lease_ttl="2s",
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture
async def issuer_ctx(issuer_settings: IssuerSettings, clock: ManualClock) -> AsyncIterator[IssuerContext]:
    async with IssuerContext(issuer_settings, clock=clock) as ctx:
        yield ctx

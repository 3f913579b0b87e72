"""Fixtures shared by every test package: a real server, a namespace, issuer settings, a clock."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator

import pytest

from keyherald.issuer.context import IssuerContext
from keyherald.issuer.kek import generate_kek_text
from keyherald.issuer.settings import IssuerSettings
from keyherald.shared.clock import ManualClock
from keyherald.shared.jwk import ControlAlgorithm

from .procs import Fleet
from .servers import EmbeddedValkey, cleanup_namespace, fresh_namespace, server_url

# Writers keep a record of the log on disk (KEYHERALD_STATE_DIR); the tests' go to a
# directory of their own, never the developer's ~/.local/state. Processes the tests start
# inherit it.
os.environ.setdefault("KEYHERALD_STATE_DIR", tempfile.mkdtemp(prefix="keyherald-test-state-"))


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
def control_key_alg() -> ControlAlgorithm:
    """Ed25519 here: made in microseconds, where the default RSA-3072 key takes about 0.1 s
    and the suite makes hundreds. Modules that run the default override this fixture
    (tests/e2e, the replica processes, following a live log, the CLI's anchor)."""
    return "EdDSA"


@pytest.fixture
def issuer_settings(redis_url: str, namespace: str, kek: str, control_key_alg: ControlAlgorithm) -> IssuerSettings:
    return IssuerSettings(
        redis_url=redis_url,
        namespace=namespace,
        issuer="https://issuer.test",
        kek=kek,
        rotation_period="60s",
        token_ttl="5m",
        heartbeat_interval="2s",
        lease_ttl="2s",
        control_key_alg=control_key_alg,
        auto_init=True,  # each test prepares its own namespace
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture
async def issuer_ctx(issuer_settings: IssuerSettings, clock: ManualClock) -> AsyncIterator[IssuerContext]:
    async with IssuerContext(issuer_settings, clock=clock) as ctx:
        yield ctx


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    """Processes a test starts (issuer replicas, agents): all stopped when it ends."""
    found = Fleet()
    try:
        yield found
    finally:
        found.close()


@pytest.fixture
def own_server() -> Iterator[EmbeddedValkey]:
    """A server of the test's own, for what is global to a server (ACL users, a wipe, a stop)."""
    server = EmbeddedValkey()
    try:
        yield server
    finally:
        server.close()

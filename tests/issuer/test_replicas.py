"""High availability with real processes: kill the leader with SIGKILL, the other takes over."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from redis import Redis

from keyherald.issuer.context import IssuerContext
from keyherald.issuer.settings import IssuerSettings
from keyherald.shared import EVENT_FIELD, Names
from keyherald.shared.connect import sync_client
from keyherald.shared.envelope import TrustAnchor
from keyherald.shared.jwk import ControlAlgorithm

pytestmark = pytest.mark.redis

LEASE = 2.0


@pytest.fixture
def control_key_alg() -> ControlAlgorithm:
    """The default control key (RSA-3072, PS256): this module runs what deployments run."""
    return "PS256"


def spawn(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "from keyherald.issuer.cli import main; main()", "issuer", "run"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def wait_for(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def replica_env(issuer_settings: IssuerSettings) -> dict[str, str]:
    assert issuer_settings.kek is not None
    return {
        **os.environ,
        "KEYHERALD_REDIS_URL": issuer_settings.redis_url,
        "KEYHERALD_NAMESPACE": issuer_settings.namespace,
        "KEYHERALD_ISSUER": issuer_settings.issuer,
        "KEYHERALD_KEK": issuer_settings.kek.get_secret_value(),
        "KEYHERALD_CONTROL_KEY_ALG": issuer_settings.control_key_alg,
        "KEYHERALD_AUTO_INIT": "true",  # the first replica prepares the namespace
        "KEYHERALD_ROTATION_PERIOD": "2s",
        "KEYHERALD_TOKEN_TTL": "3s",
        "KEYHERALD_HEARTBEAT_INTERVAL": "500ms",
        "KEYHERALD_LEASE_TTL": f"{LEASE}s",
        "KEYHERALD_HTTP_PORT": "0",
        "KEYHERALD_WORKERS": "1",  # a replica killed here is one process (tests/issuer/test_workers.py: several)
    }


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def activations(redis: Redis, names: Names) -> int:
    return sum(1 for _, f in redis.xrange(names.events) if b"key.activated" in _payload(f[EVENT_FIELD.encode()]))


def _payload(jws: bytes) -> bytes:
    import base64

    part = jws.split(b".")[1]
    return base64.urlsafe_b64decode(part + b"=" * (-len(part) % 4))


def test_leader_killed_with_sigkill_is_replaced_within_the_lease(
    replica_env: dict[str, str], issuer_settings: IssuerSettings, processes: list[subprocess.Popen[bytes]]
) -> None:
    names = Names(issuer_settings.namespace)
    redis = sync_client(issuer_settings.redis_url)
    try:
        processes.append(spawn(replica_env))
        first = wait_for(lambda: redis.get(names.leader), 20, "a leader")
        processes.append(spawn(replica_env))
        wait_for(lambda: activations(redis, names) >= 2, 15, "a scheduled rotation")
        leader_pid = int(first.decode().split(":")[1])
        victim = next(p for p in processes if p.pid == leader_pid)
        survivor = next(p for p in processes if p.pid != leader_pid)
        time.sleep(0.5)  # let the survivor's replica finish starting
        rotations_before = activations(redis, names)
        victim.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        new_leader = wait_for(
            lambda: (h := redis.get(names.leader)) and int(h.decode().split(":")[1]) == survivor.pid and h,
            LEASE + 5, "the survivor to take the lease",
        )
        took_over = time.monotonic() - killed_at
        assert took_over <= LEASE + 2, f"takeover took {took_over:.1f}s"
        assert new_leader != first
        wait_for(lambda: activations(redis, names) > rotations_before + 1, 15, "rotation under the new leader")
        assert survivor.poll() is None

        # The whole log: every entry verifies, seq 1..N with no gap and no duplicate.
        anchor = trusted_anchor(issuer_settings)
        entries = redis.xrange(names.events)
        seqs = [anchor.open_event(f[EVENT_FIELD.encode()].decode()).seq for _, f in entries]
        assert seqs == list(range(1, len(seqs) + 1))
        assert [e[0].decode() for e in entries] == [f"{s}-0" for s in seqs]
    finally:
        redis.close()


def trusted_anchor(settings: IssuerSettings) -> TrustAnchor:
    """The anchor derived from the control key the KEK opens, not from anything Redis claims."""

    async def load() -> TrustAnchor:
        ctx = IssuerContext(settings)
        await ctx.open(create=False)
        try:
            return ctx.control.anchor
        finally:
            await ctx.close()

    return asyncio.run(load())


def test_a_control_key_is_created_once_by_racing_replicas(
    replica_env: dict[str, str], issuer_settings: IssuerSettings, processes: list[subprocess.Popen[bytes]]
) -> None:
    names = Names(issuer_settings.namespace)
    redis = sync_client(issuer_settings.redis_url)
    try:
        processes.extend(spawn(replica_env) for _ in range(2))
        wait_for(lambda: redis.get(names.snapshot), 20, "genesis")
        wait_for(lambda: len(redis.xrange(names.events)) >= 6, 10, "a few events")
        anchor = trusted_anchor(issuer_settings)
        anchor.open_snapshot(redis.get(names.snapshot).decode())
        for _, fields in redis.xrange(names.events):
            anchor.open_event(fields[EVENT_FIELD.encode()].decode())  # all signed by the one control key
        assert all(p.poll() is None for p in processes)
    finally:
        redis.close()


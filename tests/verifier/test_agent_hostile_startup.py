"""Start-up against someone who can write Redis: garbage, bytes that are not text, or a forgery
where the snapshot should be. The issuer's next append replaces it, so the agent waits it out
(booting from its cache file meanwhile, if it has one) instead of refusing to start at once;
only a validly signed snapshot of another issuer is a configuration error that fails at once
(tests/verifier/test_agent_outage.py).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from keyherald.issuer.admin import Admin
from keyherald.issuer.context import IssuerContext
from keyherald.shared.clock import ManualClock
from keyherald.shared.envelope import ControlKey
from keyherald.verifier import BootstrapError, VerifierAgent

from .agent_kit import eventually, mint, refuses, running_agent, settings_for

pytestmark = pytest.mark.redis


async def test_garbage_in_the_snapshot_at_startup_is_waited_out(issuer: IssuerContext, clock: ManualClock) -> None:
    """Anyone who can write Redis could otherwise stop every restarting service from booting."""
    good = await issuer.redis.get(issuer.names.snapshot)
    await issuer.redis.set(issuer.names.snapshot, "garbage")
    agent = VerifierAgent(settings_for(issuer, startup_timeout="5s"), clock=clock)
    starting = asyncio.create_task(agent.start())
    try:
        await asyncio.sleep(0.3)  # real time: it must still be retrying
        assert not starting.done()
        await issuer.redis.set(issuer.names.snapshot, good)  # the issuer's next append
        await asyncio.wait_for(starting, 3)
        status = agent.status()
        assert status.bootstrapped and status.source == "redis" and status.following
        assert refuses(agent, await mint(issuer, clock)) is None
    finally:
        await agent.stop()


async def test_a_snapshot_that_is_not_utf8_at_startup_gives_a_clear_bootstrap_error(
    issuer: IssuerContext, clock: ManualClock
) -> None:
    await issuer.redis.set(issuer.names.snapshot, b"\xff\xfe")
    started = time.monotonic()
    with pytest.raises(BootstrapError, match=r"refused \(malformed\).*KEYHERALD_TRUST_ANCHOR"):
        async with VerifierAgent(settings_for(issuer, startup_timeout="0.5s"), clock=clock):
            pass
    assert time.monotonic() - started >= 0.45  # retried until the timeout, not given up at once


async def test_a_forged_snapshot_at_startup_boots_from_the_cache_file_and_follows_on(
    issuer: IssuerContext, clock: ManualClock, tmp_path: Path
) -> None:
    cache = tmp_path / "agent-cache.json"
    async with running_agent(issuer, clock, cache_path=cache):
        pass
    good = await issuer.redis.get(issuer.names.snapshot)
    state = await issuer.log.read_state()
    await issuer.redis.set(issuer.names.snapshot, ControlKey.generate("EdDSA").seal_snapshot(state.to_snapshot()))
    agent = VerifierAgent(settings_for(issuer, cache_path=cache, startup_timeout="5s"), clock=clock)
    starting = asyncio.create_task(agent.start())
    try:
        # Redis answered with a forgery: the cache is loaded, but an answer the attacker chose
        # does not make an old memory current. The next genuine event does.
        await asyncio.sleep(0.3)
        assert not starting.done()
        await issuer.redis.set(issuer.names.snapshot, good)
        token = await mint(issuer, clock, jti="after-forged-snapshot")
        await Admin(issuer).revoke_token("after-forged-snapshot", int(clock()) + 300)
        await asyncio.wait_for(starting, 3)
        assert agent.status().source == "cache"
        await eventually(lambda: refuses(agent, token) == "revoked", what="follows on")
        assert agent.status().refused_by_reason.get("snapshot_untrusted_signer", 0) <= 1
    finally:
        await agent.stop()

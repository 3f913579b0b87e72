"""Synchronous applications (Flask, Django): the same agent on a thread of its own."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from keyherald.issuer.admin import Admin
from keyherald.issuer.context import IssuerContext
from keyherald.shared.clock import ManualClock
from keyherald.verifier import BootstrapError, VerifierAgent

from .agent_kit import eventually, genesis, mint, refuses, settings_for

pytestmark = pytest.mark.redis


def _agent_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "keyherald-verifier"]


async def test_background_agent_verifies_from_any_thread_and_follows(
    issuer_ctx: IssuerContext, clock: ManualClock
) -> None:
    await genesis(issuer_ctx)
    token = await mint(issuer_ctx, clock, jti="threaded")
    agent = VerifierAgent(settings_for(issuer_ctx), clock=clock)
    with agent:  # start_background() / stop_background()
        assert len(_agent_threads()) == 1
        with ThreadPoolExecutor(4) as pool:
            subs = list(pool.map(lambda _: agent.verify(token)["sub"], range(8)))
        assert subs == ["billing-service"] * 8
        await Admin(issuer_ctx).revoke_token("threaded", int(clock()) + 300)
        await eventually(lambda: refuses(agent, token) == "revoked", what="revocation on the thread")
        assert agent.status().connected
    assert _agent_threads() == []


async def test_background_start_failure_raises_and_leaves_no_thread(
    issuer_ctx: IssuerContext, clock: ManualClock
) -> None:
    agent = VerifierAgent(
        settings_for(issuer_ctx, redis_url="redis://127.0.0.1:1/0", startup_timeout="0.3s"), clock=clock
    )
    with pytest.raises(BootstrapError):
        agent.start_background()
    assert _agent_threads() == []
    agent.stop_background()  # harmless when not running

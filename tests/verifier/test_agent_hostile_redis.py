"""The agent against someone who can write Redis, while it follows: bytes that are not text,
replayed snapshots, entries far ahead of the log (start-up: test_agent_hostile_startup.py).

Redis is an untrusted transport: such a writer may deny service for a while, but must never
stop an agent for good, hide the issuer's later events from it, or bring a dead key back.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from keyherald.issuer.admin import Admin
from keyherald.issuer.context import IssuerContext
from keyherald.issuer.rotation import Rotator
from keyherald.issuer.tokens import sign_token
from keyherald.shared.clock import ManualClock
from keyherald.shared.jwk import SigningKey
from keyherald.verifier import VerifierAgent
from keyherald.verifier import follower as follower_module
from keyherald.verifier.follower import Follower

from .agent_kit import AUDIENCE, eventually, mint, refuses, running_agent

pytestmark = pytest.mark.redis


@pytest.fixture
def quick_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    """The idle snapshot check every 0.2 s instead of 2 s, so that a test sees it at once."""
    monkeypatch.setattr(follower_module, "BLOCK_MS", 200)
    monkeypatch.setattr(follower_module, "SOCKET_MARGIN", 0.5)


def _forge(ctx: IssuerContext, clock: ManualClock, key: SigningKey) -> str:
    """A fresh token signed with ``key``: what whoever leaked it would mint."""
    now = int(clock())
    return sign_token({
        "iss": ctx.settings.issuer, "sub": "thief", "aud": AUDIENCE, "iat": now, "nbf": now,
        "exp": now + 60, "jti": uuid.uuid4().hex, "client_id": "thief",
    }, key)


# -- bytes that are not text --------------------------------------------------------------------


async def test_an_entry_that_is_not_utf8_is_refused_and_following_goes_on(
    issuer: IssuerContext, clock: ManualClock
) -> None:
    async with running_agent(issuer, clock) as agent:
        seq = agent.status().seq
        await issuer.redis.xadd(issuer.names.events, {"event": b"\xff"}, id=f"{seq}-1")
        await eventually(lambda: agent.status().refused_events == 1, what="the entry refused")
        token = await mint(issuer, clock, jti="after-bad-bytes")
        await Admin(issuer).revoke_token("after-bad-bytes", int(clock()) + 300)
        await eventually(lambda: refuses(agent, token) == "revoked", what="later revocation applied")
        status = agent.status()
    assert status.connected and status.following and status.follow_failures == 0
    assert dict(status.refused_by_reason) == {"malformed": 1}


async def test_a_snapshot_that_is_not_utf8_is_refused_and_following_goes_on(
    issuer: IssuerContext, clock: ManualClock, quick_idle: None
) -> None:
    good = await issuer.redis.get(issuer.names.snapshot)
    async with running_agent(issuer, clock) as agent:
        await issuer.redis.set(issuer.names.snapshot, b"\xff\xfe not a snapshot")
        await eventually(lambda: agent.status().refused_by_reason.get("snapshot_malformed") == 1,
                         within=3, what="the snapshot refused")
        await issuer.redis.set(issuer.names.snapshot, good)  # the issuer reads it to append
        token = await mint(issuer, clock, jti="after-bad-snapshot")
        await Admin(issuer).revoke_token("after-bad-snapshot", int(clock()) + 300)
        await eventually(lambda: refuses(agent, token) == "revoked", what="later revocation applied")
        status = agent.status()
    assert status.connected and status.following and status.refused_events == 1


async def test_the_follow_loop_survives_an_unexpected_error(
    issuer: IssuerContext, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Follower._read_once
    failures = [RuntimeError("boom"), KeyError("boom")]

    async def flaky(self: Follower) -> None:
        if failures:
            raise failures.pop()
        await original(self)

    monkeypatch.setattr(Follower, "_read_once", flaky)
    async with running_agent(issuer, clock) as agent:
        token = await mint(issuer, clock, jti="after-failures")
        await Admin(issuer).revoke_token("after-failures", int(clock()) + 300)
        await eventually(lambda: refuses(agent, token) == "revoked", within=2, what="revocation applied")
        status = agent.status()
    assert status.following and status.connected and status.follow_failures == 2


async def test_status_tells_when_the_follower_is_not_running(
    issuer: IssuerContext, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It survives every error it can foresee; should it ever end, the status must say so."""

    async def dies(self: Follower) -> None:
        raise RuntimeError("a bug nobody caught")

    monkeypatch.setattr(Follower, "run", dies)
    async with running_agent(issuer, clock) as agent:
        await eventually(lambda: not agent.status().following, what="death noticed")
        assert not agent.status().connected


# -- replayed snapshots ----------------------------------------------------------------------------


async def _revoke_and_expire(ctx: IssuerContext, clock: ManualClock, agent: VerifierAgent, kid: str) -> None:
    clock.advance(10)
    await Admin(ctx).revoke_key(kid)
    await eventually(lambda: any(k.kid == kid and k.state == "revoked" for k in agent.status().keys),
                     what="key revoked")
    clock.advance(300 + 300 + 60)  # past its expires_at (token ttl + grace + a tick)
    await Rotator(ctx).tick()
    await eventually(lambda: all(k.kid != kid for k in agent.status().keys), what="key expired")


async def test_a_replayed_old_snapshot_is_refused_and_a_dead_key_stays_dead(
    issuer: IssuerContext, clock: ManualClock, quick_idle: None
) -> None:
    """A leaked key was revoked, then expired. Putting back a snapshot recorded while it was
    active (and deleting the stream) must neither revive it nor drop the current keys."""
    recorded = await issuer.redis.get(issuer.names.snapshot)
    leaked_kid = (await issuer.log.read_state()).active_key.kid  # type: ignore[union-attr]
    leaked = await issuer.keystore.get(leaked_kid)
    async with running_agent(issuer, clock) as agent:
        await _revoke_and_expire(issuer, clock, agent, leaked_kid)
        current = await mint(issuer, clock)
        seq = agent.status().seq

        await issuer.redis.set(issuer.names.snapshot, recorded)
        await issuer.redis.delete(issuer.names.events)
        await eventually(lambda: agent.status().refused_events + agent.status().resets > 0,
                         within=3, what="the replayed snapshot looked at")
        assert refuses(agent, _forge(issuer, clock, leaked)) == "unknown_key"
        assert agent.status().refused_by_reason == {"snapshot_replayed": 1}
        assert refuses(agent, current) is None
        status = agent.status()
    assert status.resets == 0 and status.seq == seq


async def test_a_later_log_that_forgot_a_revocation_cannot_revive_the_key(
    issuer: IssuerContext, clock: ManualClock, quick_idle: None
) -> None:
    """Redis restored from a backup that predates a key's revocation, and the issuer went on
    with it (later in time, behind in seq): the agent resets to that log, but the key it saw
    revoked and expired stays refused, and so do the tokens it saw revoked."""
    backup = await issuer.log.read_state()
    leaked_kid = backup.active_key.kid  # type: ignore[union-attr]
    leaked = await issuer.keystore.get(leaked_kid)
    async with running_agent(issuer, clock) as agent:
        await _revoke_and_expire(issuer, clock, agent, leaked_kid)
        revoked = await mint(issuer, clock, jti="revoked-before-restore")
        await Admin(issuer).revoke_token("revoked-before-restore", int(clock()) + 300)
        await eventually(lambda: refuses(agent, revoked) == "revoked", what="token revoked")
        current = await mint(issuer, clock)

        clock.advance(5)
        restored = await issuer.log.read_state()
        restored.seq, restored.time = backup.seq, clock()
        restored.keys[leaked_kid] = backup.keys[leaked_kid]  # active, as when the backup was taken
        restored.revoked_tokens.clear()
        await issuer.redis.set(issuer.names.snapshot, issuer.control.seal_snapshot(restored.to_snapshot()))
        await issuer.redis.delete(issuer.names.events)
        await eventually(lambda: agent.status().resets == 1, within=3, what="reset to the restored log")

        assert agent.status().seq == backup.seq
        assert refuses(agent, _forge(issuer, clock, leaked)) == "key_revoked"
        assert refuses(agent, revoked) == "revoked"
        assert refuses(agent, current) is None  # the keys both logs hold still verify
        assert agent.status().refused_events == 0


# -- entries far ahead of the log ---------------------------------------------------------------


async def test_a_forged_entry_far_ahead_does_not_hide_the_next_events(
    issuer: IssuerContext, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Were the cursor moved to 9999999999-0, every genuine event would sit below it, seen
    only by the idle snapshot check (made slow here, so that only the stream can be in time)."""
    monkeypatch.setattr(follower_module, "BLOCK_MS", 10_000)
    async with running_agent(issuer, clock) as agent:
        await issuer.redis.xadd(issuer.names.events, {"event": "not.a.jws"}, id="9999999999-0")
        await eventually(lambda: agent.status().refused_events == 1, what="junk refused")
        token = await mint(issuer, clock, jti="after-far-junk")
        # Nothing could be appended after the junk: the issuer's next append restarts the stream.
        await Admin(issuer).revoke_token("after-far-junk", int(clock()) + 300)
        await eventually(lambda: refuses(agent, token) == "revoked", within=1, what="revocation from the stream")
        status = agent.status()
    assert status.resyncs == 0 and status.refused_events == 1


async def test_junk_far_ahead_is_refused_once_and_not_read_in_a_busy_loop(
    issuer: IssuerContext, clock: ManualClock
) -> None:
    async with running_agent(issuer, clock) as agent:
        redis: Any = agent._redis
        reads = 0
        xread = redis.xread

        async def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal reads
            reads += 1
            return await xread(*args, **kwargs)

        redis.xread = counting
        for i in range(3):
            await issuer.redis.xadd(issuer.names.events, {"event": f"junk-{i}"}, id=f"999999999{i}-0")
        await eventually(lambda: agent.status().refused_events == 3, what="junk refused")
        reads = 0
        await asyncio.sleep(1.0)  # real time: how often it reads is the point
        assert reads < 20
        assert agent.status().refused_events == 3 and agent.status().connected


async def test_a_stream_key_of_another_type_is_survived_on_the_same_connection(
    issuer: IssuerContext, clock: ManualClock
) -> None:
    """Someone replaces the stream with a string: every XREAD gets a WRONGTYPE error reply.
    The agent keeps verifying from memory and keeps its one connection (an error reply read
    whole does not poison it); once the issuer's next append restarts the stream, events
    flow again."""
    token = await mint(issuer, clock, jti="after-wrongtype")
    async with running_agent(issuer, clock) as agent:
        follower = agent._follower
        await eventually(lambda: follower is not None and follower._conn is not None, what="following")
        assert follower is not None
        connection = follower._conn
        await issuer.redis.delete(issuer.names.events)
        await issuer.redis.set(issuer.names.events, "not a stream")
        # The blocked XREAD ends within its block time; the next one gets WRONGTYPE.
        await eventually(lambda: agent.status().follow_failures >= 1, within=4, what="the error reply seen")
        assert follower._conn is connection  # the error reply did not cost the connection
        assert agent.status().connected and agent.status().disconnects == 0  # Redis is there
        assert agent.verify(token)["jti"] == "after-wrongtype"  # verify serves from memory
        await issuer.redis.delete(issuer.names.events)
        seq = await Admin(issuer).revoke_token("after-wrongtype", int(clock()) + 300)
        await eventually(lambda: agent.status().seq == seq, within=3, what="events flow again")
        assert refuses(agent, token) == "revoked"
        assert agent.status().connected and follower._conn is connection

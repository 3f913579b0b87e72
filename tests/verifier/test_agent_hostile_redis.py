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
from keyherald.verifier import BootstrapError, VerifierAgent
from keyherald.verifier import follower as follower_module
from keyherald.verifier import source as source_module
from keyherald.verifier.follower import Follower

from .agent_kit import AUDIENCE, eventually, mint, refuses, running_agent

pytestmark = pytest.mark.redis


@pytest.fixture
def quick_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    """The idle snapshot check every 0.2 s instead of 2 s, so that a test sees it at once."""
    monkeypatch.setattr(follower_module, "BLOCK_MS", 200)
    monkeypatch.setattr(source_module, "BLOCK_MS", 200)
    monkeypatch.setattr(source_module, "SOCKET_MARGIN", 0.5)


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


async def test_a_checkpoint_that_is_not_utf8_is_refused_and_following_goes_on(
    issuer: IssuerContext, clock: ManualClock, quick_idle: None
) -> None:
    async with running_agent(issuer, clock) as agent:
        await issuer.redis.set(issuer.names.snapshot, b"\xff\xfe not a snapshot")
        # A running agent follows the stream; it has no use for the checkpoint.
        token = await mint(issuer, clock, jti="after-bad-snapshot")
        await Admin(issuer).revoke_token("after-bad-snapshot", int(clock()) + 300)
        await eventually(lambda: refuses(agent, token) == "revoked", what="later revocation applied")
        # One that starts now refuses it, and says why.
        with pytest.raises(BootstrapError, match=r"refused \(malformed\)"):
            async with running_agent(issuer, clock, startup_timeout="1s"):
                pass
        status = agent.status()
    assert status.connected and status.following and status.refused_events == 0


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
    """A leaked key was revoked, then expired. Putting back a checkpoint recorded while it was
    active (and deleting the stream) must neither revive it nor drop the current keys."""
    await issuer.log.checkpoint(force=True)
    recorded = await issuer.redis.get(issuer.names.snapshot)
    leaked_kid = (await issuer.log.read_state()).active_key.kid  # type: ignore[union-attr]
    leaked = await issuer.keystore.get(leaked_kid)
    async with running_agent(issuer, clock) as agent:
        await _revoke_and_expire(issuer, clock, agent, leaked_kid)
        current = await mint(issuer, clock)
        seq = agent.status().seq

        await issuer.redis.set(issuer.names.snapshot, recorded)
        await issuer.redis.delete(issuer.names.events)
        # A new reader would bootstrap from the old checkpoint; a running one looks at it
        # when the log moves on, sees an earlier point of its own log, and takes nothing.
        await issuer.redis.xadd(issuer.names.events, {"event": "nudge"}, id=f"{seq + 5}-0")
        await eventually(lambda: agent.status().refused_events == 1, within=3, what="the junk refused")
        await asyncio.sleep(0.5)  # real time: a few idle looks at the stream's end
        assert refuses(agent, _forge(issuer, clock, leaked)) == "unknown_key"
        assert refuses(agent, current) is None
        status = agent.status()
    assert status.resets == 0 and status.resyncs == 0 and status.seq == seq


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
        # The restore: a new log whose base is the old state, and its first event.
        restored = await issuer.log.read_state()
        restored.keys[leaked_kid] = backup.keys[leaked_kid]  # active, as when the backup was taken
        restored.revoked_tokens.clear()
        restored.time = clock()
        await issuer.log.start_new_log(restored, reason="restore", previous=None)
        await eventually(lambda: agent.status().resets == 1, within=3, what="reset to the restored log")

        assert agent.status().log == (await issuer.log.read_state()).log
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
        # Nothing could be appended after the junk: the issuer starts a new log from what it
        # holds, numbered on from the old one, and the agent's blocked read wakes up at it.
        await Admin(issuer).revoke_token("after-far-junk", int(clock()) + 300)
        await eventually(lambda: refuses(agent, token) == "revoked", within=1, what="revocation from the stream")
        status = agent.status()
    assert status.resets == 1 and status.refused_events == 1


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
        await eventually(lambda: follower is not None and follower.source._conn is not None, what="following")
        assert follower is not None
        connection = follower.source._conn
        await issuer.redis.delete(issuer.names.events)
        await issuer.redis.set(issuer.names.events, "not a stream")
        # The blocked XREAD ends within its block time; the next one gets WRONGTYPE.
        await eventually(lambda: agent.status().follow_failures >= 1, within=4, what="the error reply seen")
        assert follower.source._conn is connection  # the error reply did not cost the connection
        assert agent.status().connected and agent.status().disconnects == 0  # Redis is there
        assert agent.verify(token)["jti"] == "after-wrongtype"  # verify serves from memory
        await issuer.redis.delete(issuer.names.events)
        seq = await Admin(issuer).revoke_token("after-wrongtype", int(clock()) + 300)
        await eventually(lambda: agent.status().seq == seq, within=3, what="events flow again")
        assert refuses(agent, token) == "revoked"
        assert agent.status().connected and follower.source._conn is connection

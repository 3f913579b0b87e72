"""The agent against a real server: bootstrap, rotation, revocations, and a hostile stream."""

from __future__ import annotations

import asyncio

import pytest

from keyherald.issuer.admin import Admin
from keyherald.issuer.context import IssuerContext
from keyherald.issuer.tokens import sign_token
from keyherald.shared.chain import digest
from keyherald.shared.clock import ManualClock
from keyherald.shared.connect import build_client
from keyherald.shared.envelope import ControlKey
from keyherald.shared.events import Event, EventType, KeyState
from keyherald.shared.jwk import ControlAlgorithm, SigningKey
from keyherald.shared.jws import parse_compact
from keyherald.shared.names import stream_id
from keyherald.verifier import BootstrapError, VerifierAgent, VerifierSettings
from keyherald.verifier.catchup import from_redis
from keyherald.verifier.follower import Follower
from keyherald.verifier.keycache import KeyCache
from keyherald.verifier.signedstate import SignedState
from keyherald.verifier.source import LogSource, connect

from .agent_kit import eventually, mint, refuses, running_agent, settings_for

pytestmark = pytest.mark.redis


@pytest.fixture
def control_key_alg() -> ControlAlgorithm:
    """The default control key (RSA-3072, PS256): this module runs what deployments run."""
    return "PS256"


async def test_bootstrap_verifies_tokens_and_reports_status(issuer: IssuerContext, clock: ManualClock) -> None:
    token = await mint(issuer, clock, scope="read")
    stranger = sign_token({"iss": issuer.settings.issuer, "aud": "orders", "exp": int(clock()) + 60,
                           "iat": int(clock())}, SigningKey.generate("ES256"))
    async with running_agent(issuer, clock) as agent:
        claims = agent.verify(token)
        assert refuses(agent, stranger) == "unknown_key"  # verify never fetches keys
        status = agent.status()
    assert claims["sub"] == "billing-service" and claims["scope"] == "read"
    state = await issuer.log.read_state()
    assert status.bootstrapped and status.connected and status.source == "redis"
    assert status.seq == state.seq
    assert status.age == 0 and not status.stale
    assert sorted(k.state for k in status.keys) == [KeyState.ACTIVE, KeyState.PUBLISHED]
    assert status.refused_events == 0 and status.revoked_tokens == 0 and status.unknown_kid == 1
    assert status.as_dict()["keys"][0]["kid"] in state.keys


async def test_live_rotation_keeps_old_tokens_and_accepts_the_new_key(
    issuer: IssuerContext, clock: ManualClock
) -> None:
    async with running_agent(issuer, clock) as agent:
        old_token = await mint(issuer, clock)
        state = await issuer.log.read_state()
        standby = next(k for k in state.keys.values() if k.state is KeyState.PUBLISHED)
        # The next key is held before anyone signs with it.
        assert any(k.kid == standby.kid and k.state == "published" for k in agent.status().keys)

        clock.advance(10)
        seq = await Admin(issuer).rotate()
        await eventually(lambda: agent.status().seq == seq, what="rotation applied")
        new_token = await mint(issuer, clock)
        assert parse_compact(new_token).header["kid"] == standby.kid
        assert agent.verify(new_token)["iat"] == int(clock())
        assert agent.verify(old_token)["sub"] == "billing-service"  # retired key still verifies
        states = {k.kid: k.state for k in agent.status().keys}
        assert states[standby.kid] == "active" and list(states.values()).count("published") == 1

        clock.advance(300 + 30)  # the old token's expiry (plus the leeway) passes
        assert refuses(agent, old_token) == "expired"


async def test_revocations_apply_within_a_second(issuer: IssuerContext, clock: ManualClock) -> None:
    async with running_agent(issuer, clock) as agent:
        by_jti = await mint(issuer, clock, jti="jti-1", sub="a")
        by_subject = await mint(issuer, clock, sub="compromised")
        other = await mint(issuer, clock, sub="b")
        for token in (by_jti, by_subject, other):
            agent.verify(token)  # all cached as valid first

        admin = Admin(issuer)
        await admin.revoke_token("jti-1", int(clock()) + 300)
        await eventually(lambda: refuses(agent, by_jti) == "revoked", what="jti revocation")
        await admin.revoke_subject("compromised")
        await eventually(lambda: refuses(agent, by_subject) == "revoked", what="subject revocation")
        assert refuses(agent, other) is None

        kid = parse_compact(other).header["kid"]
        await admin.revoke_key(kid)
        await eventually(lambda: refuses(agent, other) == "key_revoked", what="key revocation")
        # Emergency rotation: the standby every agent holds signs at once.
        assert refuses(agent, await mint(issuer, clock, sub="b")) is None
        status = agent.status()
        assert status.revoked_tokens == 1 and status.revoked_subjects == 1
        assert status.refused_events == 0


async def test_forged_tampered_and_garbage_entries_are_refused_and_following_goes_on(
    issuer: IssuerContext, clock: ManualClock
) -> None:
    redis, stream = issuer.redis, issuer.names.events
    async with running_agent(issuer, clock) as agent:
        seq = agent.status().seq
        log_id, head = agent.keys.state.log, agent.keys.state.head
        # Forged: a well-formed revocation signed by another control key.
        forger = ControlKey.generate("EdDSA")
        forged = forger.seal_event(Event(
            log=log_id, seq=seq + 1, prev=head, type=EventType.TOKEN_REVOKED, time=clock(),
            issuer=issuer.settings.issuer, data={"jti": "victim", "expires_at": int(clock()) + 300},
        ))
        await redis.xadd(stream, {"event": forged}, id=f"{seq}-1")
        # Tampered: a genuine event with one byte of its payload changed.
        genuine = issuer.control.seal_event(Event(
            log=log_id, seq=seq + 1, prev=head, type=EventType.TOKEN_REVOKED, time=clock(),
            issuer=issuer.settings.issuer, data={"jti": "aaaa", "expires_at": int(clock()) + 300},
        ))
        head, body, sig = genuine.split(".")
        tampered = f"{head}.{body[:-3]}{'B' if body[-3] != 'B' else 'C'}{body[-2:]}.{sig}"
        await redis.xadd(stream, {"event": tampered}, id=f"{seq}-2")
        # Garbage: not a JWS at all, and an entry without the event field.
        await redis.xadd(stream, {"event": "\x00garbage"}, id=f"{seq}-3")
        await redis.xadd(stream, {"junk": "1"}, id=f"{seq}-4")

        await eventually(lambda: agent.status().refused_events == 4, what="four refusals")
        refused = agent.status().refused_by_reason
        assert refused["untrusted_signer"] == 1 and refused["malformed"] == 2
        assert refused["bad_signature"] == 1
        assert agent.status().revoked_tokens == 0 and agent.status().seq == seq

        # The genuine log goes on after the junk, and the agent follows it.
        token = await mint(issuer, clock, jti="after-junk")
        await Admin(issuer).revoke_token("after-junk", int(clock()) + 300)
        await eventually(lambda: refuses(agent, token) == "revoked", what="genuine event after junk")
        assert agent.status().refused_events == 4


async def test_a_replayed_old_event_is_ignored_not_refused(issuer: IssuerContext, clock: ManualClock) -> None:
    async with running_agent(issuer, clock) as agent:
        seq = await Admin(issuer).revoke_token("x", int(clock()) + 60)
        await eventually(lambda: agent.status().seq == seq, what="revocation applied")
        entries = await issuer.redis.xrange(issuer.names.events, stream_id(seq), stream_id(seq))
        await issuer.redis.xadd(issuer.names.events, entries[0][1], id=f"{seq}-5")
        marker = await Admin(issuer).revoke_token("y", int(clock()) + 60)
        await eventually(lambda: agent.status().seq == marker, what="later revocation applied")
        assert agent.status().refused_events == 0 and agent.status().revoked_tokens == 2


async def test_a_gap_in_seq_resyncs_from_the_snapshot(issuer: IssuerContext, clock: ManualClock) -> None:
    """An event is lost between the issuer and the stream: the next one reveals the gap."""
    async with running_agent(issuer, clock) as agent:
        tokens = [await mint(issuer, clock, jti=f"gap-{i}") for i in (1, 2)]
        state = await issuer.log.read_state()
        texts = []
        for i in (1, 2):
            event = Event(log=state.log, seq=state.seq + 1, prev=state.head, type=EventType.TOKEN_REVOKED,
                          time=clock(), issuer=issuer.settings.issuer,
                          data={"jti": f"gap-{i}", "expires_at": int(clock()) + 300})
            texts.append(issuer.control.seal_event(event))
            state.apply(event, digest(texts[-1]))
        second = state.seq
        # Only the second event reaches the stream; the checkpoint covers both.
        await issuer.redis.set(issuer.names.snapshot, issuer.control.seal_snapshot(state.to_snapshot()))
        await issuer.redis.set(issuer.names.head, f"{state.log}:{state.seq}:{state.head}")
        await issuer.redis.xadd(issuer.names.events, {"event": texts[1]}, id=stream_id(second))
        await eventually(lambda: agent.status().seq == second, what="resync")
        assert agent.status().resyncs == 1
        assert [refuses(agent, t) for t in tokens] == ["revoked", "revoked"]
        # The issuer appends after the resynced head as usual.
        seq = await Admin(issuer).revoke_subject("later")
        await eventually(lambda: agent.status().seq == seq, what="follow after resync")


async def test_position_trimmed_away_resyncs(issuer: IssuerContext, clock: ManualClock) -> None:
    """A follower that fell behind a trimmed stream catches up from the checkpoint."""
    admin = Admin(issuer)
    keys = KeyCache(issuer.settings.issuer)
    signed = SignedState(keys, issuer.control.anchor, issuer=issuer.settings.issuer)
    redis = connect(issuer.settings.redis_url)
    try:
        source = LogSource(redis, issuer.names)
        candidate = await from_redis(source, signed)
        signed.load_state(candidate.state, candidate.material, current=True)
        follower = Follower(source, issuer.names, signed)
        behind = keys.state.seq
        for i in range(5):
            await admin.revoke_token(f"t{i}", int(clock()) + 300)
        head = (await admin.state()).seq
        await issuer.log.checkpoint(force=True)  # the issuer trims only what a checkpoint covers
        await issuer.redis.xtrim(issuer.names.events, minid=stream_id(head - 1))
        await follower._read_once()
    finally:
        await redis.aclose()
    assert keys.state.seq == head > behind + 2
    assert len(keys.state.revoked_tokens) == 5 and signed.resyncs == 1


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("own_client", [True, False], ids=["agent's client", "client passed in"])
async def test_an_agent_follows_over_resp2_and_resp3(
    issuer: IssuerContext, clock: ManualClock, own_client: bool, protocol: int
) -> None:
    """XREAD replies come as RESP2 arrays or RESP3 maps (one level deeper through redis-py's
    xread); every shape must reach the agent as events, not as errors healed by a resync."""
    url = f"{issuer.settings.redis_url}?protocol={protocol}"
    token = await mint(issuer, clock, jti="over-resp3")
    client = None if own_client else build_client(url)
    try:
        async with VerifierAgent(settings_for(issuer, redis_url=url), clock=clock, redis=client) as agent:
            assert agent.verify(token)["jti"] == "over-resp3"
            seq = await Admin(issuer).revoke_token("over-resp3", int(clock()) + 300)
            await eventually(lambda: agent.status().seq == seq, what="revocation over RESP3")
            status = agent.status()
            assert refuses(agent, token) == "revoked"
            assert status.follow_failures == 0 and status.resyncs == 0 and status.refused_events == 0
    finally:
        if client is not None:
            await client.aclose()


async def test_a_killed_read_connection_is_replaced_and_nothing_is_missed(
    issuer: IssuerContext, clock: ManualClock
) -> None:
    """The follower reads on a connection of its own: when the server drops it mid-XREAD,
    the follower takes a fresh one and reads on from the last verified position."""
    token = await mint(issuer, clock, jti="after-the-kill")
    admin = issuer.redis
    async with running_agent(issuer, clock) as agent:
        await asyncio.sleep(0.05)  # blocked in XREAD by now
        follower = agent._follower
        assert follower is not None and follower.source._conn is not None
        host, port = follower.source._conn._writer.get_extra_info("sockname")[:2]
        ours = [c for c in await admin.client_list() if c["addr"] == f"{host}:{port}"]
        assert [c["cmd"] for c in ours] == ["xread"], "the follower is not blocked in XREAD"
        await admin.client_kill_filter(_id=ours[0]["id"])
        seq = await Admin(issuer).revoke_token("after-the-kill", int(clock()) + 300)
        await eventually(lambda: agent.status().seq == seq, what="the revocation after the kill")
        assert refuses(agent, token) == "revoked"
        assert agent.status().connected and agent.status().disconnects == 1


async def test_stopping_an_agent_that_is_still_starting_leaves_no_connection(redis_url: str, namespace: str) -> None:
    admin = build_client(redis_url)

    async def ours() -> int:
        """Connections of this namespace's agents (each names its connection): the shared server
        has other clients coming and going."""
        return sum(1 for c in await admin.client_list() if c.get("name") == f"keyherald-agent:{namespace}")

    try:
        assert await ours() == 0
        settings = VerifierSettings(redis_url=redis_url, namespace=namespace, issuer="https://issuer.test",
                                    audience="orders", trust_anchor=ControlKey.generate("EdDSA").anchor.thumbprint,
                                    startup_timeout="10s")
        for _ in range(5):
            agent = VerifierAgent(settings)
            starting = asyncio.create_task(agent.start())
            await asyncio.sleep(0.1)  # retrying: the namespace holds no snapshot
            assert await ours() == 1  # connected while it retries
            await agent.stop()
            with pytest.raises(BootstrapError, match="stopped while it was starting"):
                await starting
            assert not agent.status().following
        await asyncio.sleep(0.05)  # let the server see the closed sockets
        assert await ours() == 0
    finally:
        await admin.aclose()

"""Redis going away: validating offline, catching up, booting from the cache file, staleness.

The server-stopping tests use a Valkey of their own (tests.servers.EmbeddedValkey): the
shared test server is never stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from keyherald.issuer.admin import Admin
from keyherald.issuer.context import IssuerContext
from keyherald.issuer.rotation import Rotator
from keyherald.issuer.settings import IssuerSettings
from keyherald.shared.clock import ManualClock
from keyherald.shared.envelope import ControlKey
from keyherald.shared.events import Event, EventType
from keyherald.verifier import BootstrapError, VerifierAgent, VerifierSettings
from tests.servers import EmbeddedValkey

from .agent_kit import eventually, genesis, mint, refuses, running_agent, settings_for

pytestmark = pytest.mark.redis

CLOSED_PORT_URL = "redis://127.0.0.1:1/0"



@pytest.fixture
async def own_issuer(
    own_server: EmbeddedValkey, issuer_settings: IssuerSettings, clock: ManualClock
) -> AsyncIterator[IssuerContext]:
    settings = issuer_settings.model_copy(update={"redis_url": own_server.url})
    async with IssuerContext(settings, clock=clock) as ctx:
        await genesis(ctx)
        yield ctx


async def _dump(redis: Redis, namespace: str) -> dict[str, bytes]:
    keys = [k async for k in redis.scan_iter(match=f"{{{namespace}}}:*")]
    return {k: await redis.dump(k) for k in keys}  # type: ignore[misc]


async def _reconnect(redis: Redis) -> None:
    """The issuer's client holds a connection the restart killed: its first command fails."""
    deadline = time.monotonic() + 5
    while True:
        try:
            await redis.ping()
            return
        except (RedisError, OSError):
            if time.monotonic() > deadline:
                raise


async def test_redis_restarted_with_its_data_agent_validates_offline_then_catches_up(
    own_server: EmbeddedValkey, own_issuer: IssuerContext, clock: ManualClock
) -> None:
    """What a deployment with persistence sees: the same log comes back, and moves on."""
    token = await mint(own_issuer, clock, jti="during-outage")
    async with running_agent(own_issuer, clock) as agent:
        agent.verify(token)
        saved = await _dump(own_issuer.redis, own_issuer.names.namespace)

        own_server.stop()
        await eventually(lambda: not agent.status().connected, within=5, what="outage noticed")
        clock.advance(60)
        assert agent.verify(token)["jti"] == "during-outage"  # offline, from memory
        status = agent.status()
        # Not fresh (stale: withheld events would look the same), but still accepting tokens.
        assert status.age == 60 and status.stale and not status.refusing and status.disconnects == 1

        own_server.start()
        await _reconnect(own_issuer.redis)
        for key, value in saved.items():
            await own_issuer.redis.restore(key, 0, value)
        await Admin(own_issuer).revoke_token("during-outage", int(clock()) + 300)
        await eventually(lambda: refuses(agent, token) == "revoked", within=5, what="catch-up")
        assert agent.status().connected and agent.status().age == 0


async def test_redis_restarted_empty_the_agent_adopts_the_new_log_and_keeps_revocations(
    own_server: EmbeddedValkey, own_issuer: IssuerContext, clock: ManualClock, tmp_path: Path
) -> None:
    """An empty Redis where the issuer starts a new log (same control key): seq goes back.
    The agent adopts it only because its signature verifies, and forgets no revocation, not
    even across a restart from its cache file (the new log's signed texts lack it)."""
    revoked = await mint(own_issuer, clock, jti="old-revoked")
    cache = tmp_path / "agent-cache.json"
    async with running_agent(own_issuer, clock, cache_path=cache) as agent:
        await Admin(own_issuer).revoke_token("old-revoked", int(clock()) + 300)
        await eventually(lambda: refuses(agent, revoked) == "revoked", what="revocation")
        old_seq = agent.status().seq
        control_blob = await own_issuer.redis.get(own_issuer.names.control_key)

        own_server.stop()
        await eventually(lambda: not agent.status().connected, within=5, what="outage noticed")
        own_server.start()
        await _reconnect(own_issuer.redis)
        await own_issuer.redis.set(own_issuer.names.control_key, control_blob)  # restored from backup
        clock.advance(5)
        # A restarted replica finds Redis empty: it starts a new log, linked to the point its
        # local record holds and numbered on from it.
        async with IssuerContext(own_issuer.settings, clock=clock) as restarted:
            new_log = await Rotator(restarted).tick()
            state = await restarted.log.read_state()
            assert state.previous is not None and state.previous.seq == old_seq and new_log[0].seq > old_seq
            await eventually(lambda: agent.status().resets == 1, within=6, what="new log adopted")
            assert agent.status().seq == new_log[-1].seq and agent.status().log == state.log
            assert refuses(agent, await mint(restarted, clock)) is None  # the new log's key
            assert refuses(agent, revoked) == "unknown_key"  # the old log's keys are gone with it
            assert agent.status().revoked_tokens == 1  # but its revocations are kept
            await Admin(restarted).revoke_subject("someone")
            await eventually(lambda: agent.status().revoked_subjects == 1, what="follows the new log")
            same_jti = await mint(restarted, clock, jti="old-revoked")
            assert refuses(agent, same_jti) == "revoked"
            await eventually(lambda: json.loads(cache.read_text())["kept"] is not None, within=3, what="cache written")
    offline = settings_for(own_issuer, redis_url=CLOSED_PORT_URL, cache_path=cache, startup_timeout="3s")
    async with VerifierAgent(offline, clock=clock) as again:
        assert again.status().source == "cache" and again.status().revoked_tokens == 1
        assert refuses(again, same_jti) == "revoked"


async def test_cold_start_from_the_cache_file_with_redis_down(
    issuer: IssuerContext, clock: ManualClock, tmp_path: Path
) -> None:
    cache = tmp_path / "agent-cache.json"
    good, revoked = await mint(issuer, clock), await mint(issuer, clock, jti="gone")
    async with running_agent(issuer, clock, cache_path=cache) as agent:
        seq = await Admin(issuer).revoke_token("gone", int(clock()) + 300)
        await eventually(lambda: agent.status().seq == seq, what="revocation applied")
        await eventually(cache.exists, within=3, what="cache file written")
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temp file, renamed

    settings = settings_for(issuer, redis_url=CLOSED_PORT_URL, cache_path=cache, startup_timeout="3s")
    started = time.monotonic()
    async with VerifierAgent(settings, clock=clock) as offline:
        assert time.monotonic() - started < 1  # no waiting for Redis when the file serves
        status = offline.status()
        assert status.source == "cache" and not status.connected and status.seq == seq
        assert offline.verify(good)["sub"] == "billing-service"
        assert refuses(offline, revoked) == "revoked"


@pytest.mark.parametrize("damage", ["snapshot byte", "forged event", "not json"])
async def test_a_tampered_cache_file_is_refused(
    issuer: IssuerContext, clock: ManualClock, tmp_path: Path, damage: str
) -> None:
    cache = tmp_path / "agent-cache.json"
    async with running_agent(issuer, clock, cache_path=cache):
        pass
    document = json.loads(cache.read_text())
    if damage == "snapshot byte":
        head, body, sig = document["snapshot"].split(".")
        document["snapshot"] = f"{head}.{body[:10]}{'A' if body[10] != 'A' else 'B'}{body[11:]}.{sig}"
    elif damage == "forged event":
        state = await issuer.log.read_state()
        document["events"].append(ControlKey.generate("EdDSA").seal_event(Event(
            log=state.log, seq=state.seq + 1, prev=state.head, type=EventType.KEY_REVOKED, time=clock(),
            issuer=issuer.settings.issuer, data={},
        )))
    text = "{not json" if damage == "not json" else json.dumps(document)
    cache.write_text(text)

    settings = settings_for(issuer, redis_url=CLOSED_PORT_URL, cache_path=cache, startup_timeout="0.5s")
    with pytest.raises(BootstrapError, match="cache file") as caught:
        async with VerifierAgent(settings, clock=clock):
            pass
    assert "KEYHERALD_REDIS_URL" in str(caught.value)


async def test_fail_closed_staleness_and_recovery(issuer: IssuerContext, clock: ManualClock) -> None:
    token = await mint(issuer, clock, ttl=300)
    async with running_agent(issuer, clock, max_staleness="10s") as agent:
        assert agent.verify(token)
        clock.advance(11)  # no word from the issuer for longer than max_staleness
        assert agent.status().refusing
        assert refuses(agent, token) == "stale"
        await Rotator(issuer).tick()  # the leader's heartbeat
        await eventually(lambda: not agent.status().refusing, what="fresh again")
        assert refuses(agent, token) is None and not agent.status().stale


async def test_by_default_the_agent_refuses_once_no_token_it_could_vouch_for_is_left(
    issuer: IssuerContext, clock: ManualClock
) -> None:
    """Past the issuer's longest token lifetime plus the leeway without a verified event,
    every token the agent would accept was issued after it lost word: it fails closed."""
    token = await mint(issuer, clock, ttl=300)
    async with running_agent(issuer, clock) as agent:
        clock.advance(20)
        status = agent.status()
        assert status.stale and not status.refusing  # reported at once...
        assert refuses(agent, token) is None  # ...while tokens are still accepted
        clock.advance(250 - 20)
        assert refuses(agent, token) is None
        assert agent.status().age == 250 and agent.status().max_staleness == 330
        clock.advance(81)
        assert refuses(agent, token) == "stale" and agent.status().refusing


async def test_max_staleness_off_keeps_validating_however_old_its_news(
    issuer: IssuerContext, clock: ManualClock
) -> None:
    async with running_agent(issuer, clock, max_staleness="off") as agent:
        clock.advance(1000)
        assert refuses(agent, await mint(issuer, clock)) is None
        assert agent.status().stale and not agent.status().refusing


async def test_startup_timeout_when_neither_redis_nor_a_cache_file_works(
    issuer: IssuerContext, clock: ManualClock, tmp_path: Path
) -> None:
    settings = settings_for(
        issuer, redis_url=CLOSED_PORT_URL, cache_path=tmp_path / "missing.json", startup_timeout="0.5s"
    )
    started = time.monotonic()
    with pytest.raises(BootstrapError) as caught:
        async with VerifierAgent(settings, clock=clock):
            pass
    assert 0.4 < time.monotonic() - started < 3
    message = str(caught.value)
    assert "0.5s" in message and "KEYHERALD_REDIS_URL" in message and "no cache file" in message


async def test_startup_timeout_when_the_issuer_never_wrote_a_snapshot(
    issuer_settings: IssuerSettings, redis_url: str, clock: ManualClock
) -> None:
    settings = VerifierSettings(
        redis_url=redis_url, namespace=f"empty-{issuer_settings.namespace}", issuer="https://issuer.test",
        audience="orders", trust_anchor=ControlKey.generate("EdDSA").anchor.thumbprint, startup_timeout="0.3s",
    )
    with pytest.raises(BootstrapError, match="is the issuer running"):
        async with VerifierAgent(settings, clock=clock):
            pass


async def test_a_log_of_another_issuer_fails_at_once(issuer: IssuerContext, clock: ManualClock) -> None:
    settings = settings_for(issuer, issuer="https://someone-else.test", startup_timeout="5s")
    started = time.monotonic()
    with pytest.raises(BootstrapError, match="another issuer") as caught:
        async with VerifierAgent(settings, clock=clock):
            pass
    assert time.monotonic() - started < 1
    assert "KEYHERALD_ISSUER" in str(caught.value)


async def test_a_snapshot_the_trust_anchor_refuses_fails_after_the_startup_timeout(
    issuer: IssuerContext, clock: ManualClock
) -> None:
    """Retried, not refused at once: anyone who can write Redis could put such a snapshot there."""
    other = ControlKey.generate("EdDSA").anchor
    settings = settings_for(issuer, trust_anchor=json.dumps(other.key.jwk if other.key else {}),
                            startup_timeout="0.5s")
    with pytest.raises(BootstrapError, match="KEYHERALD_TRUST_ANCHOR"):
        async with VerifierAgent(settings, clock=clock):
            pass

"""Fast unit tests of the agent's parts: settings, the signed mirror's reset, fault injection."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import fakeredis
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from keyherald.shared.clock import ManualClock
from keyherald.shared.envelope import ControlKey
from keyherald.shared.errors import SettingsError
from keyherald.shared.events import Event, EventType, KeyRecord, KeyState
from keyherald.shared.jwk import SigningKey
from keyherald.shared.names import Names, stream_id
from keyherald.shared.state import State
from keyherald.verifier import BootstrapError, VerifierAgent, VerifierSettings
from keyherald.verifier import follower as follower_module
from keyherald.verifier.follower import BLOCK_MS, connect
from keyherald.verifier.keycache import KeyCache
from keyherald.verifier.signedstate import SignedState

from .agent_kit import eventually

ISSUER = "https://issuer.test"


# -- settings ----------------------------------------------------------------------------------


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    anchor = ControlKey.generate("EdDSA").anchor
    path = tmp_path / "anchor.json"
    path.write_text(json.dumps(anchor.key.jwk if anchor.key else {}))
    for name, value in {
        "AUDIENCE": "orders, billing", "TRUST_ANCHOR": str(path), "LEEWAY": "0",
        "MAX_STALENESS": "1m", "CACHE_PATH": str(tmp_path / "c.json"), "STARTUP_TIMEOUT": "2s",
        "TOKEN_CACHE_SIZE": "5", "ISSUER": ISSUER, "NAMESPACE": "prod",
    }.items():
        monkeypatch.setenv(f"KEYHERALD_{name}", value)
    settings = VerifierSettings()
    assert settings.audience == ("orders", "billing") and settings.leeway == 0
    assert settings.max_staleness == 60 and settings.startup_timeout == 2
    assert settings.anchor().thumbprint == anchor.thumbprint and settings.names == Names("prod")


@pytest.mark.parametrize(
    ("values", "variable"),
    [
        ({"audience": ""}, "KEYHERALD_AUDIENCE"),
        ({"trust_anchor": "not-an-anchor"}, "KEYHERALD_TRUST_ANCHOR"),
        ({"leeway": "10m"}, "KEYHERALD_LEEWAY"),
        ({"leeway": "-1"}, "KEYHERALD_LEEWAY"),
        ({"max_staleness": "soon"}, "KEYHERALD_MAX_STALENESS"),
        ({"max_staleness": "0.5s"}, "KEYHERALD_MAX_STALENESS"),
        ({"startup_timeout": "0"}, "KEYHERALD_STARTUP_TIMEOUT"),
        ({"redis_url": "http://x"}, "KEYHERALD_REDIS_URL"),
        ({"token_cache_size": "-1"}, "KEYHERALD_TOKEN_CACHE_SIZE"),
    ],
)
def test_bad_settings_name_the_variable(values: dict[str, str], variable: str) -> None:
    base = {"audience": "orders", "trust_anchor": ControlKey.generate("EdDSA").anchor.thumbprint}
    with pytest.raises(SettingsError) as caught:
        VerifierSettings(**{**base, **values})
    assert caught.value.setting == variable


# -- the signed mirror -------------------------------------------------------------------------


def _record(key: SigningKey, state: KeyState, **times: int) -> KeyRecord:
    return KeyRecord(kid=key.kid, alg=key.alg, jwk=key.public.jwk, state=state, published_at=100, **times)


def test_a_log_that_went_back_in_seq_never_rolls_back_revocations_or_key_states() -> None:
    """Redis restored from an old backup that the issuer went on with: behind in seq, later
    in time. The agent adopts its seq but keeps what it knew to be revoked or retired."""
    control = ControlKey.generate("EdDSA")
    key = SigningKey.generate("ES256")
    restored = State(issuer=ISSUER, seq=3, time=600.0, max_token_ttl=300,
                     keys={key.kid: _record(key, KeyState.ACTIVE, activated_at=100)})
    now = State(issuer=ISSUER, seq=9, time=500.0, max_token_ttl=300,
                keys={key.kid: _record(key, KeyState.RETIRED, activated_at=100, retired_at=400, expires_at=900)},
                revoked_tokens={"j": 800})
    keys = KeyCache(ISSUER)
    signed = SignedState(keys, control.anchor, issuer=ISSUER)
    text = control.seal_snapshot(now.to_snapshot())
    signed.load(text, signed.open_snapshot(text))
    later = control.seal_snapshot(restored.to_snapshot())
    assert signed.reset(later, signed.open_snapshot(later))
    assert keys.state.seq == 3 and signed.resets == 1
    assert keys.state.revoked_tokens == {"j": 800}
    assert keys.state.keys[key.kid].state is KeyState.RETIRED


def test_events_of_another_issuer_or_signer_are_refused_and_counted() -> None:
    control = ControlKey.generate("EdDSA")
    keys = KeyCache(ISSUER)
    signed = SignedState(keys, control.anchor, issuer=ISSUER)
    text = control.seal_snapshot(State(issuer=ISSUER).to_snapshot())
    signed.load(text, signed.open_snapshot(text))
    data = {"jti": "x", "expires_at": 1}
    signed.offer(control.seal_event(Event(seq=1, type=EventType.TOKEN_REVOKED, time=1, issuer="evil", data=data)))
    signed.offer(ControlKey.generate("EdDSA").seal_event(
        Event(seq=1, type=EventType.TOKEN_REVOKED, time=1, issuer=ISSUER, data=data)))
    signed.offer(control.seal_event(Event(seq=1, type=EventType.TOKEN_REVOKED, time=1, issuer=ISSUER, data={})))
    signed.offer(None)
    assert dict(signed.refused) == {"wrong_issuer": 1, "untrusted_signer": 1, "malformed": 2}
    assert keys.state.seq == 0


# -- fault injection ---------------------------------------------------------------------------


class FlakyRedis(fakeredis.FakeAsyncRedis):
    """Fails the next ``failures`` XREADs as a dropped connection would."""

    failures = 0

    async def xread(self, *args: Any, **kwargs: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise RedisConnectionError("Connection reset by peer")
        return await super().xread(*args, **kwargs)


async def test_dropped_connections_are_retried_with_backoff_while_verify_serves() -> None:
    control, names = ControlKey.generate("EdDSA"), Names("unit")
    redis = FlakyRedis(decode_responses=True)
    state = State(issuer=ISSUER)
    await redis.set(names.snapshot, control.seal_snapshot(state.to_snapshot()))
    settings = VerifierSettings(issuer=ISSUER, namespace="unit", audience="orders",
                                trust_anchor=control.anchor.thumbprint)
    async with VerifierAgent(settings, clock=ManualClock(), redis=redis) as agent:
        redis.failures = 4
        await eventually(lambda: agent.status().disconnects == 1, what="disconnect noticed")
        event = Event(seq=1, type=EventType.TOKEN_REVOKED, time=5, issuer=ISSUER, data={"jti": "a", "expires_at": 9})
        await redis.xadd(names.events, {"event": control.seal_event(event)}, id=stream_id(1))
        # Four failures at 50, 100, 200, 400 ms (jittered down to half) and it catches up.
        waited = await eventually(lambda: agent.status().seq == 1, within=2, what="catch-up after retries")
        assert waited < 1.5 and redis.failures == 0
        assert agent.status().connected and agent.status().revoked_tokens == 1
    await asyncio.sleep(0)


async def test_the_client_suits_blocking_reads() -> None:
    """redis-py's defaults (5 s socket timeout, 3 silent retries) fight XREAD BLOCK: the
    follower's client waits longer than it blocks and leaves retrying to the follower."""
    client = connect("redis://127.0.0.1:1/0")
    try:
        kwargs = client.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] > BLOCK_MS / 1000
        assert kwargs["retry"].get_retries() == 0
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("reply", "ids"),
    [
        ([[b"s", [[b"1-0", [b"event", b"x"]], [b"2-0", [b"event", b"y"]]]]], [b"1-0", b"2-0"]),  # RESP2
        ({b"s": [[b"1-0", [b"event", b"x"]]]}, [b"1-0"]),  # RESP3, read raw
        ({b"s": [[(b"1-0", {b"event": b"x"}), (b"2-0", {b"event": b"y"})]]}, [b"1-0", b"2-0"]),  # redis-py RESP3
        ([["s", [("1-0", {"event": "x"})]]], ["1-0"]),  # redis-py RESP2, decoded
        ({b"s": [[]]}, []),  # redis-py RESP3, nothing in the batch
        ({b"s": []}, []),
    ],
)
def test_every_shape_of_an_xread_reply_gives_its_entries(reply: object, ids: list[object]) -> None:
    assert [entry[0] for entry in follower_module._entries(reply)] == ids


async def test_stop_during_start_ends_the_start_and_leaves_nothing_running() -> None:
    """A service shutting down while its agent still bootstraps (Redis empty, the issuer not
    up yet): stop() ends the start at once with BootstrapError, and no follower starts."""
    settings = VerifierSettings(issuer=ISSUER, namespace="unit", audience="orders",
                                trust_anchor=ControlKey.generate("EdDSA").anchor.thumbprint,
                                startup_timeout="10s")
    agent = VerifierAgent(settings, redis=fakeredis.FakeAsyncRedis())
    starting = asyncio.create_task(agent.start())
    await asyncio.sleep(0.2)  # retrying: no snapshot yet
    began = asyncio.get_running_loop().time()
    await agent.stop()
    with pytest.raises(BootstrapError, match="stopped while it was starting"):
        await starting
    assert asyncio.get_running_loop().time() - began < 1
    status = agent.status()
    assert not status.following and not status.bootstrapped

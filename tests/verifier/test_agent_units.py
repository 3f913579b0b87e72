"""Fast unit tests of the agent's parts: settings, the signed mirror's reset, fault injection."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import fakeredis
import pytest
from redis.client import NEVER_DECODE
from redis.exceptions import ConnectionError as RedisConnectionError

from keyherald.shared.chain import new_log_id
from keyherald.shared.clock import ManualClock
from keyherald.shared.envelope import ControlKey
from keyherald.shared.errors import SettingsError
from keyherald.shared.events import Event, EventType, KeyRecord, KeyState
from keyherald.shared.jwk import SigningKey
from keyherald.shared.names import Names, stream_id
from keyherald.shared.state import Outcome, State
from keyherald.verifier import BootstrapError, VerifierAgent, VerifierSettings
from keyherald.verifier import source as source_module
from keyherald.verifier.keycache import KeyCache
from keyherald.verifier.signedstate import Adoption, SignedState
from keyherald.verifier.source import BLOCK_MS, connect

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


def test_a_newer_log_that_went_back_in_seq_never_rolls_back_revocations_or_key_states() -> None:
    """Redis restored from an old backup that the issuer went on with, as a new log: behind
    in seq, later in time. The agent adopts it but keeps what it knew revoked or retired,
    and never goes back to the log it left."""
    control = ControlKey.generate("EdDSA")
    key = SigningKey.generate("ES256")
    old_log, new_log = new_log_id(), new_log_id()
    restored = State(issuer=ISSUER, log=new_log, seq=3, head="h3", time=600.0, max_token_ttl=300,
                     keys={key.kid: _record(key, KeyState.ACTIVE, activated_at=100)})
    now = State(issuer=ISSUER, log=old_log, seq=9, head="h9", time=500.0, max_token_ttl=300,
                keys={key.kid: _record(key, KeyState.RETIRED, activated_at=100, retired_at=400, expires_at=900)},
                revoked_tokens={"j": 800})
    keys = KeyCache(ISSUER)
    signed = SignedState(keys, control.anchor, issuer=ISSUER)
    text = control.seal_snapshot(now.to_snapshot())
    signed.load(text, signed.open_snapshot(text))
    later = control.seal_snapshot(restored.to_snapshot())
    assert signed.adopt(later, signed.open_snapshot(later)) is Adoption.RESET
    assert keys.state.seq == 3 and keys.state.log == new_log and signed.resets == 1
    assert "j" in keys.state.revoked_tokens and keys.state.revoked_tokens.get("j") == 800
    assert keys.state.keys[key.kid].state is KeyState.RETIRED
    # The log it left, even with a later time, is never adopted again.
    back = control.seal_snapshot(now.to_snapshot().model_copy(update={"time": 700.0}))
    assert signed.adopt(back, signed.open_snapshot(back)) is Adoption.REFUSED
    assert keys.state.log == new_log and signed.refused["snapshot_replayed"] == 1


def test_an_older_log_or_a_fork_is_refused_and_counted() -> None:
    control = ControlKey.generate("EdDSA")
    log_id = new_log_id()
    now = State(issuer=ISSUER, log=log_id, seq=9, head="h9", time=500.0, max_token_ttl=300)
    keys = KeyCache(ISSUER)
    signed = SignedState(keys, control.anchor, issuer=ISSUER)
    text = control.seal_snapshot(now.to_snapshot())
    signed.load(text, signed.open_snapshot(text))
    older = State(issuer=ISSUER, log=new_log_id(), seq=20, head="x", time=400.0)
    fork = State(issuer=ISSUER, log=log_id, seq=9, head="other", time=500.0)
    behind = State(issuer=ISSUER, log=log_id, seq=4, head="h4", time=300.0)
    verdicts = []
    for state in (older, fork, behind):
        sealed = control.seal_snapshot(state.to_snapshot())
        verdicts.append(signed.adopt(sealed, signed.open_snapshot(sealed)))
    assert verdicts == [Adoption.REFUSED, Adoption.REFUSED, Adoption.BEHIND]
    assert dict(signed.refused) == {"snapshot_replayed": 1, "fork": 1}
    assert keys.state.seq == 9 and keys.state.head == "h9"


def test_events_of_another_issuer_or_signer_or_log_are_refused_and_counted() -> None:
    control = ControlKey.generate("EdDSA")
    keys = KeyCache(ISSUER)
    signed = SignedState(keys, control.anchor, issuer=ISSUER)
    state = State.empty(ISSUER, new_log_id())
    text = control.seal_snapshot(state.to_snapshot())
    signed.load(text, signed.open_snapshot(text))
    data = {"jti": "x", "expires_at": 1}

    def event(**fields: object) -> Event:
        base: dict[str, object] = {"log": state.log, "seq": 1, "prev": state.head, "type": EventType.TOKEN_REVOKED,
                                   "time": 1, "issuer": ISSUER, "data": data}
        return Event.model_validate({**base, **fields})

    signed.offer(control.seal_event(event(issuer="evil")))
    signed.offer(ControlKey.generate("EdDSA").seal_event(event()))
    signed.offer(control.seal_event(event(data={})))
    signed.offer(None)
    assert signed.offer(control.seal_event(event(prev="not-the-head"))) is Outcome.BROKEN
    assert signed.offer(control.seal_event(event(log=new_log_id()))) is Outcome.FOREIGN
    assert dict(signed.refused) == {"wrong_issuer": 1, "untrusted_signer": 1, "malformed": 2, "chain_broken": 1}
    assert keys.state.seq == 0


# -- fault injection ---------------------------------------------------------------------------


class FlakyRedis(fakeredis.FakeAsyncRedis):
    """Fails the agent's next ``failures`` reads as a dropped connection would."""

    failures = 0

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if self.failures and NEVER_DECODE in kwargs:  # the agent's reads, not the test's writes
            self.failures -= 1
            raise RedisConnectionError("Connection reset by peer")
        return await super().execute_command(*args, **kwargs)


async def test_dropped_connections_are_retried_with_backoff_while_verify_serves() -> None:
    control, names, clock = ControlKey.generate("EdDSA"), Names("unit"), ManualClock()
    redis = FlakyRedis(decode_responses=True)
    state = State.empty(ISSUER, new_log_id())
    state.time = clock()
    await redis.set(names.snapshot, control.seal_snapshot(state.to_snapshot()))
    settings = VerifierSettings(issuer=ISSUER, namespace="unit", audience="orders",
                                trust_anchor=control.anchor.thumbprint)
    async with VerifierAgent(settings, clock=clock, redis=redis) as agent:
        redis.failures = 4
        await eventually(lambda: agent.status().disconnects == 1, what="disconnect noticed")
        event = Event(log=state.log, seq=1, prev=state.head, type=EventType.TOKEN_REVOKED, time=clock(),
                      issuer=ISSUER, data={"jti": "a", "expires_at": 9})
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
    assert [entry[0] for entry in source_module.entries(reply)] == ids


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

"""Key lifecycle against a real server: every state, the standby lead, emergency rotation."""

from __future__ import annotations

import pytest

from keyherald.issuer.admin import Admin
from keyherald.issuer.context import IssuerContext
from keyherald.issuer.errors import KeyNotFound
from keyherald.issuer.rotation import Rotator
from keyherald.issuer.tokens import TokenSigner
from keyherald.shared import KeyState, ManualClock
from keyherald.shared.jws import parse_compact

pytestmark = pytest.mark.redis

PERIOD = 60  # issuer_settings: rotation_period=60s, token_ttl=5m


async def test_genesis_publishes_an_active_key_and_a_standby(issuer_ctx: IssuerContext) -> None:
    events = await Rotator(issuer_ctx).tick()
    assert [e.type for e in events] == ["policy.updated", "key.published", "key.activated", "key.published"]
    assert [e.seq for e in events] == [2, 3, 4, 5]  # after log.started, the log's first event
    state = await issuer_ctx.log.read_state()
    assert sorted(k.state for k in state.keys.values()) == [KeyState.ACTIVE, KeyState.PUBLISHED]
    assert state.max_token_ttl == 300
    assert await Rotator(issuer_ctx).tick() == []  # nothing due


async def test_a_key_passes_through_every_state(issuer_ctx: IssuerContext, clock: ManualClock) -> None:
    """The second key: published (standby), active, retired, expired, with its times."""
    rotator = Rotator(issuer_ctx)
    history = list(await rotator.tick())
    kid = history[-1].data["key"]["kid"]  # the genesis standby
    for step in (PERIOD, PERIOD, 604, 1):
        clock.advance(step)
        history += await rotator.tick()
    mine = [e for e in history if e.data.get("kid") == kid or e.data.get("key", {}).get("kid") == kid]
    assert [e.type for e in mine] == ["key.published", "key.activated", "key.retired", "key.expired"]
    published, activated, retired, _ = (e.data.get("key", {}) for e in mine)
    assert published["state"] == "published" and published["activates_at"] == published["published_at"] + PERIOD
    assert activated["state"] == "active" and activated["activated_at"] == published["activates_at"]
    assert retired["state"] == "retired" and retired["retired_at"] == activated["activated_at"] + PERIOD
    # its last token's exp (ttl 300), plus the largest agent leeway (300), plus a tick (5)
    assert retired["expires_at"] == retired["retired_at"] + 605
    assert mine[-1].time >= retired["expires_at"]
    assert kid not in (await issuer_ctx.log.read_state()).keys
    assert kid not in await issuer_ctx.keystore.kids()  # the private key is deleted with it


async def test_a_retired_key_stays_while_its_tokens_may_live(issuer_ctx: IssuerContext, clock: ManualClock) -> None:
    rotator = Rotator(issuer_ctx)
    await rotator.tick()
    first = (await issuer_ctx.log.read_state()).active_key
    assert first is not None
    clock.advance(PERIOD)
    await rotator.tick()
    clock.advance(604)  # exp of its last token + the largest leeway an agent may give
    await rotator.tick()
    assert (await issuer_ctx.log.read_state()).keys[first.kid].state is KeyState.RETIRED


async def test_the_next_key_is_published_a_period_before_it_signs(
    issuer_ctx: IssuerContext, clock: ManualClock
) -> None:
    rotator, signer = Rotator(issuer_ctx), TokenSigner(issuer_ctx)
    await rotator.tick()
    state = await issuer_ctx.log.read_state()
    standby = state.keys_in(KeyState.PUBLISHED)[0]
    assert standby.activates_at == standby.published_at + PERIOD
    await signer.refresh()
    assert parse_compact(await signer.sign({"sub": "a"})).header["kid"] != standby.kid
    clock.advance(PERIOD - 1)
    await rotator.tick()
    await signer.refresh()
    assert parse_compact(await signer.sign({"sub": "a"})).header["kid"] != standby.kid
    clock.advance(1)
    await rotator.tick()
    await signer.refresh()
    token = parse_compact(await signer.sign({"sub": "a"}))
    assert token.header == {"alg": "ES256", "kid": standby.kid, "typ": "at+jwt"}
    after = await issuer_ctx.log.read_state()
    assert after.keys[standby.kid].state is KeyState.ACTIVE
    new_standby = after.keys_in(KeyState.PUBLISHED)
    assert len(new_standby) == 1 and new_standby[0].published_at == int(clock())


async def test_emergency_rotation_activates_the_standby_at_once(issuer_ctx: IssuerContext) -> None:
    await Rotator(issuer_ctx).tick()
    before = await issuer_ctx.log.read_state()
    active, standby = before.active_key, before.keys_in(KeyState.PUBLISHED)[0]
    assert active is not None
    seq = await Admin(issuer_ctx).rotate(emergency=True)
    after = await issuer_ctx.log.read_state()
    assert seq == after.seq == before.seq + 3
    assert after.keys[active.kid].state is KeyState.REVOKED
    assert after.keys[active.kid].revoked_at is not None
    assert after.active_key is not None and after.active_key.kid == standby.kid
    assert len(after.keys_in(KeyState.PUBLISHED)) == 1  # a new standby right after


async def test_revoking_the_standby_replaces_it(issuer_ctx: IssuerContext) -> None:
    await Rotator(issuer_ctx).tick()
    before = await issuer_ctx.log.read_state()
    standby = before.keys_in(KeyState.PUBLISHED)[0]
    await Admin(issuer_ctx).revoke_key(standby.kid)
    after = await issuer_ctx.log.read_state()
    assert after.keys[standby.kid].state is KeyState.REVOKED
    replacement = after.keys_in(KeyState.PUBLISHED)
    assert len(replacement) == 1 and replacement[0].kid != standby.kid
    assert after.active_key == before.active_key


async def test_revoking_a_retired_key_keeps_signing_untouched(issuer_ctx: IssuerContext, clock: ManualClock) -> None:
    rotator = Rotator(issuer_ctx)
    await rotator.tick()
    old = (await issuer_ctx.log.read_state()).active_key
    assert old is not None
    clock.advance(PERIOD)
    await rotator.tick()
    before = await issuer_ctx.log.read_state()
    seq = await Admin(issuer_ctx).revoke_key(old.kid)
    after = await issuer_ctx.log.read_state()
    assert seq == before.seq + 1
    assert after.keys[old.kid].state is KeyState.REVOKED
    assert after.active_key == before.active_key
    assert await Admin(issuer_ctx).revoke_key(old.kid) == seq  # revoking twice appends nothing


async def test_revoking_an_unknown_key_is_a_clear_error(issuer_ctx: IssuerContext) -> None:
    await Rotator(issuer_ctx).tick()
    with pytest.raises(KeyNotFound, match="no key with kid"):
        await Admin(issuer_ctx).revoke_key("nope")


@pytest.mark.parametrize("alg", ["EdDSA", "RS256"])
async def test_other_algorithms_sign_with_their_own_alg(issuer_settings, clock: ManualClock, alg: str) -> None:  # type: ignore[no-untyped-def]
    settings = issuer_settings.model_copy(update={"algorithm": alg})
    async with IssuerContext(settings, clock=clock) as ctx:
        await Rotator(ctx).tick()
        signer = TokenSigner(ctx)
        token = parse_compact(await signer.sign({"sub": "a"}))
        assert token.header["alg"] == alg
        state = await ctx.log.read_state()
        assert {k.alg for k in state.keys.values()} == {alg}

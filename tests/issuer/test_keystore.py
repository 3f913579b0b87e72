"""Private keys at rest: sealed under the KEK, bound to their names, never shown."""

from __future__ import annotations

import pytest

from keyherald.issuer.context import IssuerContext
from keyherald.issuer.kek import KeyEncryptionKey, WrongKEK, generate_kek_text
from keyherald.issuer.rotation import Rotator
from keyherald.shared.clock import ManualClock
from keyherald.shared.encoding import b64url_encode
from keyherald.shared.jwk import SigningKey

pytestmark = pytest.mark.redis


async def test_private_keys_are_sealed_in_redis(issuer_ctx: IssuerContext) -> None:
    await Rotator(issuer_ctx).tick()
    state = await issuer_ctx.log.read_state()
    stored = await issuer_ctx.redis.hgetall(issuer_ctx.names.signing_keys)
    assert set(stored) == set(state.keys)
    for kid, blob in stored.items():
        der = (await issuer_ctx.keystore.get(kid)).private_bytes()
        for spelling in (der.hex(), b64url_encode(der), der[-32:].hex()):
            assert spelling not in blob
    control = await issuer_ctx.redis.get(issuer_ctx.names.control_key)
    assert issuer_ctx.control.signing_key.private_bytes().hex() not in control


async def test_nothing_public_carries_private_members(issuer_ctx: IssuerContext) -> None:
    await Rotator(issuer_ctx).tick()
    snapshot = await issuer_ctx.redis.get(issuer_ctx.names.snapshot)
    opened = issuer_ctx.control.anchor.open_snapshot(snapshot)
    for record in opened.keys:
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(record.jwk)
    assert "<hidden>" in repr(KeyEncryptionKey.from_text(generate_kek_text()))


async def test_a_sealed_key_moved_to_another_kid_does_not_open(issuer_ctx: IssuerContext) -> None:
    """The KEK's associated data binds each blob to its kid: swapping blobs is detected."""
    await Rotator(issuer_ctx).tick()
    stored = await issuer_ctx.redis.hgetall(issuer_ctx.names.signing_keys)
    kid_a, kid_b = sorted(stored)
    await issuer_ctx.redis.hset(issuer_ctx.names.signing_keys, kid_a, stored[kid_b])
    issuer_ctx.keystore._cache.clear()
    with pytest.raises(WrongKEK):
        await issuer_ctx.keystore.get(kid_a)


async def test_keys_no_append_announced_are_swept_once_old(issuer_ctx: IssuerContext, clock: ManualClock) -> None:
    """A commit that lost its race, or a crash before a delete, leaves a private key behind."""
    rotator = Rotator(issuer_ctx)
    await rotator.tick()
    lost, in_flight = SigningKey.generate("ES256"), SigningKey.generate("ES256")
    await issuer_ctx.keystore.put(lost, made_at=clock() - 3601)
    await issuer_ctx.keystore.put(in_flight, made_at=clock())
    assert await rotator.sweep(clock()) == [lost.kid]
    state = await issuer_ctx.log.read_state()
    assert await issuer_ctx.keystore.kids() == set(state.keys) | {in_flight.kid}

"""Interop (PyJWT and joserfc read our tokens), the real issuer on the real server, the bench."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import jwt as pyjwt
import pytest
from joserfc import jwk as joserfc_jwk
from joserfc import jwt as joserfc_jwt
from redis.asyncio import Redis

from keyherald.issuer.admin import Admin
from keyherald.issuer.context import IssuerContext
from keyherald.issuer.rotation import Rotator
from keyherald.issuer.tokens import sign_token
from keyherald.shared.chain import digest
from keyherald.shared.clock import ManualClock
from keyherald.shared.events import Snapshot
from keyherald.shared.jwk import ALGORITHMS, Algorithm, SigningKey
from keyherald.shared.names import Names
from keyherald.shared.state import Outcome
from keyherald.verifier.keycache import KeyCache
from keyherald.verifier.validator import Validator

from .validator_kit import AUDIENCE, ISSUER, Kit, refusal

# --- interop: our JWS is plain RFC 7515, others read it -------------------------------------

@pytest.mark.parametrize("alg", ALGORITHMS)
def test_pyjwt_and_joserfc_accept_our_tokens_with_the_public_jwk(alg: Algorithm) -> None:
    kit = Kit(alg)
    claims = {**kit.claims(), "iat": 1_700_000_000, "exp": 4_000_000_000}
    token = sign_token(claims, kit.key)
    jwk_json = json.dumps(kit.key.public.jwk)
    key = pyjwt.PyJWK.from_json(jwk_json)
    assert pyjwt.get_unverified_header(token) == {"alg": alg, "kid": kit.key.kid, "typ": "at+jwt"}
    assert pyjwt.decode(token, key, algorithms=[alg], audience=AUDIENCE, issuer=ISSUER) == claims
    # joserfc warns that RFC 9864 deprecates the name "EdDSA" (PyJWT and most libraries use it).
    with pytest.warns(Warning, match="EdDSA") if alg == "EdDSA" else contextlib.nullcontext():
        decoded = joserfc_jwt.decode(token, joserfc_jwk.import_key(kit.key.public.jwk), algorithms=[alg])
    assert decoded.claims == claims


# --- with the real issuer on the real server --------------------------------------------------

async def _agent_cache(ctx: IssuerContext) -> KeyCache:
    """Bootstrap as an agent does: the signed snapshot, then every event after its position."""
    names = Names(ctx.settings.namespace)
    redis: Redis = ctx.redis
    anchor = ctx.control.anchor
    raw = await redis.get(names.snapshot)
    text = raw.decode() if isinstance(raw, bytes) else raw
    snapshot: Snapshot = anchor.open_snapshot(text, issuer=ISSUER)
    cache = KeyCache(ISSUER)
    cache.load_snapshot(snapshot)
    await _catch_up(ctx, cache, snapshot.position)
    return cache


async def _catch_up(ctx: IssuerContext, cache: KeyCache, after: str | None = None) -> None:
    names = Names(ctx.settings.namespace)
    start = f"({after or f'{cache.state.seq}-0'}"
    for _, fields in await ctx.redis.xrange(names.events, min=start):
        raw = fields.get(b"event", fields.get("event"))
        text = raw.decode() if isinstance(raw, bytes) else raw
        event = ctx.control.anchor.open_event(text, issuer=ISSUER)
        assert cache.apply(event, digest(text)) is Outcome.APPLIED


@pytest.mark.redis
async def test_issuer_tokens_rotation_and_revocations_end_to_end(
    issuer_ctx: IssuerContext, clock: ManualClock
) -> None:
    await Rotator(issuer_ctx).tick()
    cache = await _agent_cache(issuer_ctx)
    validator = Validator(cache, issuer=ISSUER, audience=AUDIENCE, clock=clock)
    first = cache.state.active_key
    assert first is not None
    old_key = await issuer_ctx.keystore.get(first.kid)

    def mint(key: SigningKey, **extra: Any) -> str:
        now = int(clock())
        return sign_token({"iss": ISSUER, "aud": AUDIENCE, "sub": "billing", "iat": now,
                           "exp": now + 300, **extra}, key)

    old_token = mint(old_key, jti="j-old")
    assert validator.verify(old_token)["jti"] == "j-old"

    clock.advance(61)  # rotation period 60 s: the standby becomes active, the old key retires
    await Rotator(issuer_ctx).tick()
    await _catch_up(issuer_ctx, cache)
    second = cache.state.active_key
    assert second is not None and second.kid != first.kid
    new_key = await issuer_ctx.keystore.get(second.kid)
    assert validator.verify(old_token)["jti"] == "j-old"  # valid until its expiry
    assert validator.verify(mint(new_key))["sub"] == "billing"
    clock.advance(40)  # past retirement + leeway: the retired key can no longer mint
    assert refusal(validator, mint(old_key)) == "key_not_active"

    admin = Admin(issuer_ctx)
    fresh = mint(new_key, jti="j-new")
    validator.verify(fresh)
    await admin.revoke_token("j-new", int(clock()) + 300)
    await _catch_up(issuer_ctx, cache)
    assert refusal(validator, fresh) == "revoked"

    await admin.rotate(emergency=True)  # the active key is compromised
    await _catch_up(issuer_ctx, cache)
    assert refusal(validator, mint(new_key)) == "key_revoked"
    third = cache.state.active_key
    assert third is not None and third.kid not in (first.kid, second.kid)
    assert validator.verify(mint(await issuer_ctx.keystore.get(third.kid)))["sub"] == "billing"

    clock.advance(1)
    await admin.revoke_subject("billing")
    await _catch_up(issuer_ctx, cache)
    assert refusal(validator, mint(await issuer_ctx.keystore.get(third.kid))) == "revoked"
    assert validator.counters["unexpected_errors"] == 0


# --- the benchmark ---------------------------------------------------------------------------

def test_the_benchmark_runs_and_prints_its_table(capsys: pytest.CaptureFixture[str]) -> None:
    """Not a timing test (timings are the benchmark's business): it must not rot."""
    from bench import verify as bench

    bench.main(["--rounds", "1", "--round-ms", "1"])
    out = capsys.readouterr().out
    for row in ("| ES256 | keyherald |", "| EdDSA | PyJWT |", "| RS256 | joserfc |", "cached"):
        assert row in out

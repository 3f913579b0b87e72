"""The validator's rules, one refusal reason at a time, its cache, its staleness, its interop.

Every token here is really signed; every state change goes through a sealed event folded
by the real KeyCache. The issuer-backed tests at the end use the real server.
"""

from __future__ import annotations

from typing import Any

import pytest

from keyherald.issuer.tokens import sign_token
from keyherald.shared.events import EventType, KeyState
from keyherald.shared.jwk import ALGORITHMS, SigningKey
from keyherald.shared.revocations import RevokedTokens
from keyherald.verifier.keycache import KeyCache
from keyherald.verifier.validator import REASONS, Validator

from .validator_kit import AUDIENCE, ISSUER, TTL, Kit, forge, refusal


@pytest.fixture(params=ALGORITHMS)
def kit(request: pytest.FixtureRequest) -> Kit:
    return Kit(request.param)


@pytest.fixture
def es() -> Kit:
    return Kit("ES256")


# --- accepted -----------------------------------------------------------------------------

def test_a_token_from_sign_token_verifies_to_its_claims(kit: Kit) -> None:
    validator = kit.validator()
    claims = kit.claims()
    token = sign_token(claims, kit.key)
    assert validator.verify(token) == claims
    assert validator.verify(token.encode("ascii")) == claims  # ASCII bytes too


def test_several_audiences_and_rfc9068_typ_spellings(es: Kit) -> None:
    validator = es.validator(audience=["payments", "orders"])
    assert validator.verify(es.token(aud=["inventory", "orders"]))["aud"] == ["inventory", "orders"]
    assert validator.verify(es.token(aud="payments"))["aud"] == "payments"
    for typ in ("application/at+jwt", "AT+JWT"):
        token = forge({"alg": "ES256", "kid": es.key.kid, "typ": typ}, es.claims(), es.key.sign)
        assert validator.verify(token)["sub"] == "billing"


# --- refused, reason by reason ----------------------------------------------------------------

@pytest.mark.parametrize(
    "overrides",
    [
        {"exp": None}, {"iat": None}, {"exp": True}, {"iat": "1800000000"}, {"nbf": [1]},
        {"exp": -1}, {"exp": 2**60}, {"aud": 7}, {"aud": ["orders", 7]}, {"jti": 42},
        {"sub": ["billing"]}, {"iss": 1},
    ],
    ids=repr,
)
def test_missing_or_mistyped_claims_are_malformed(es: Kit, overrides: dict[str, Any]) -> None:
    assert refusal(es.validator(), es.token(**overrides)) == "malformed"


def test_a_signed_payload_that_is_not_a_json_object_is_malformed(es: Kit) -> None:
    header = {"alg": "ES256", "kid": es.key.kid, "typ": "at+jwt"}
    for body in (b"[1, 2]", b"\"text\"", b"{\"exp\": NaN}", b"{\"a\": 1", b"\xff\xfe"):
        assert refusal(es.validator(), forge(header, body, es.key.sign)) == "malformed"


def test_an_unknown_kid_is_refused_and_counted(es: Kit) -> None:
    validator = es.validator()
    stranger = SigningKey.generate("ES256")
    assert refusal(validator, es.token(key=stranger)) == "unknown_key"
    assert validator.counters["unknown_kids"] == 1
    assert validator.counters["refused.unknown_key"] == 1


def test_a_signature_by_another_key_or_over_other_bytes_is_bad(kit: Kit) -> None:
    validator = kit.validator()
    impostor = SigningKey.generate(kit.key.alg)
    header = {"alg": kit.key.alg, "kid": kit.key.kid, "typ": "at+jwt"}
    assert refusal(validator, forge(header, kit.claims(), impostor.sign)) == "bad_signature"
    head, body, sig = kit.token().split(".")
    other_body = kit.token(sub="admin").split(".")[1]
    assert refusal(validator, f"{head}.{other_body}.{sig}") == "bad_signature"
    assert refusal(validator, f"{head}.{body}.") == "bad_signature"
    assert validator.counters["refused.bad_signature"] == 3


def test_expiry_honours_the_leeway(es: Kit) -> None:
    validator = es.validator(leeway=30)
    token = es.token()
    es.clock.advance(TTL + 29)
    assert validator.verify(token)["sub"] == "billing"
    validator.clear_cache()
    es.clock.advance(1)
    assert refusal(validator, token) == "expired"
    assert refusal(es.validator(leeway=0), es.token(exp=int(es.clock()), iat=int(es.clock()) - 10)) == "expired"


def test_nbf_and_iat_in_the_future_honour_the_leeway(es: Kit) -> None:
    now = int(es.clock())
    validator = es.validator(leeway=30)
    assert validator.verify(es.token(nbf=now + 30))["nbf"] == now + 30
    assert refusal(validator, es.token(nbf=now + 31)) == "not_yet_valid"
    assert validator.verify(es.token(iat=now + 30, exp=now + 300))["iat"] == now + 30
    assert refusal(validator, es.token(iat=now + 31, exp=now + 300)) == "not_yet_valid"


def test_another_or_missing_issuer_is_wrong(es: Kit) -> None:
    assert refusal(es.validator(), es.token(iss="https://evil.test")) == "wrong_issuer"
    assert refusal(es.validator(), es.token(iss=None)) == "wrong_issuer"


@pytest.mark.parametrize("aud", ["payments", ["payments", "inventory"], [], None])
def test_a_token_for_another_audience_is_wrong(es: Kit, aud: Any) -> None:
    assert refusal(es.validator(), es.token(aud=aud)) == "wrong_audience"


def test_a_lifetime_beyond_the_published_maximum_is_refused(es: Kit) -> None:
    now = int(es.clock())
    validator = es.validator()
    assert validator.verify(es.token(exp=now + TTL))["exp"] == now + TTL
    assert refusal(validator, es.token(exp=now + TTL + 1)) == "lifetime_exceeded"


def test_without_a_published_maximum_lifetime_every_token_is_refused(es: Kit) -> None:
    state = es.cache.state.copy()
    state.revoked_tokens = RevokedTokens()  # the agent's compact store cannot be written out
    snapshot = state.to_snapshot().model_copy(update={"max_token_ttl": 0})
    cache = KeyCache(ISSUER)
    cache.load_snapshot(snapshot)
    validator = Validator(cache, issuer=ISSUER, audience=AUDIENCE, clock=es.clock)
    assert refusal(validator, es.token(exp=int(es.clock()) + 1)) == "lifetime_exceeded"


def test_a_revoked_jti_is_refused_and_others_are_not(es: Kit) -> None:
    validator = es.validator()
    token = es.token(jti="t-1")
    es.event(EventType.TOKEN_REVOKED, {"jti": "t-1", "expires_at": int(es.clock()) + TTL})
    assert refusal(validator, token) == "revoked"
    assert validator.verify(es.token(jti="t-2"))["jti"] == "t-2"


def test_a_subject_cut_off_refuses_tokens_issued_up_to_it(es: Kit) -> None:
    validator = es.validator()
    before = es.token(sub="billing")
    cut = int(es.clock())
    es.event(EventType.SUBJECT_REVOKED, {"sub": "billing", "revoked_at": cut, "expires_at": cut + TTL})
    assert refusal(validator, before) == "revoked"
    assert refusal(validator, es.token(sub="billing")) == "revoked"  # same second: covered
    es.clock.advance(1)
    assert validator.verify(es.token(sub="billing"))["sub"] == "billing"  # issued after the cut
    assert validator.verify(es.token(sub="shipping", iat=cut, exp=cut + TTL))["sub"] == "shipping"


def test_a_token_of_a_revoked_key_is_refused(es: Kit) -> None:
    validator = es.validator()
    token = es.token()
    now = int(es.clock())
    record = es.cache.record(es.key.kid)
    assert record is not None
    es.replace_key(
        record.model_copy(update={"state": KeyState.REVOKED, "revoked_at": now, "expires_at": now + TTL}),
        EventType.KEY_REVOKED,
    )
    assert refusal(validator, token) == "key_revoked"


def test_a_key_signs_only_inside_its_window(es: Kit) -> None:
    """A key leaked after its retirement cannot mint fresh-looking tokens."""
    validator = es.validator(leeway=30)
    record = es.cache.record(es.key.kid)
    assert record is not None and record.activated_at is not None
    retired = int(es.clock())
    es.replace_key(record.model_copy(
        update={"state": KeyState.RETIRED, "retired_at": retired, "expires_at": retired + TTL}
    ))
    assert validator.verify(es.token(iat=retired, exp=retired + TTL))["iat"] == retired  # old token
    es.clock.advance(60)
    now = int(es.clock())
    assert refusal(validator, es.token(iat=now, exp=now + TTL)) == "key_not_active"
    assert validator.verify(es.token(iat=retired + 30, exp=now + 10))["iat"] == retired + 30
    successor = es.others["EdDSA"]  # a key activated just now signs nothing dated before it
    es.event(EventType.KEY_ACTIVATED, {"key": Kit.record(successor, now).model_dump(mode="json")})
    assert refusal(validator, es.token(key=successor, iat=now - 31, exp=now + 100)) == "key_not_active"
    assert validator.verify(es.token(key=successor, iat=now - 30, exp=now + 100))["iat"] == now - 30


def test_a_published_key_verifies_from_its_publication(es: Kit) -> None:
    """Its activation event may still be in flight: the standby must verify at once."""
    standby = SigningKey.generate("ES256")
    published = int(es.clock())
    es.event(EventType.KEY_PUBLISHED, {"key": Kit.record(standby, published, KeyState.PUBLISHED).model_copy(
        update={"activated_at": None, "activates_at": published + 60}).model_dump(mode="json")})
    validator = es.validator(leeway=0)
    es.clock.advance(5)
    assert validator.verify(es.token(key=standby))["sub"] == "billing"
    assert refusal(validator, es.token(key=standby, iat=published - 1, exp=published + 100)) == "key_not_active"


def test_staleness_fails_closed_and_recovers(es: Kit) -> None:
    validator = es.validator(max_staleness=10)
    token = es.token()
    assert validator.verify(token)["sub"] == "billing"  # now cached
    es.clock.advance(11)
    assert refusal(validator, token) == "stale"  # on a cache hit too
    assert refusal(validator, es.token()) == "stale"
    es.heartbeat()
    assert validator.verify(token)["sub"] == "billing"
    assert es.validator().verify(token)["sub"] == "billing"  # default: never stale


def test_a_cache_not_bootstrapped_refuses_everything(es: Kit) -> None:
    validator = Validator(KeyCache(ISSUER), issuer=ISSUER, audience=AUDIENCE, clock=es.clock)
    assert refusal(validator, es.token()) == "stale"


def test_settings_are_checked_at_construction(es: Kit) -> None:
    for bad in ({"leeway": -1}, {"leeway": 301}, {"audience": []}, {"audience": ""},
                {"issuer": ""}, {"max_staleness": 0}, {"cache_size": -1}):
        with pytest.raises(ValueError):
            es.validator(**bad)


def test_counters_cover_every_reason(es: Kit) -> None:
    validator = es.validator()
    assert {f"refused.{r}" for r in REASONS} <= set(validator.counters)
    refusal(validator, "x")
    refusal(validator, es.token(iss="https://evil.test"))
    counters = validator.counters
    assert counters["refused.malformed"] == 1 and counters["refused.wrong_issuer"] == 1
    assert counters["unexpected_errors"] == 0

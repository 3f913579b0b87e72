"""The verified-token cache: copies, revocations and expiry on hits, the LRU bound, threads."""

from __future__ import annotations

import json
import threading

import pytest

from keyherald.shared.encoding import b64url_decode
from keyherald.shared.events import EventType, KeyState
from keyherald.verifier.errors import InvalidToken

from .validator_kit import TTL, Kit, refusal


@pytest.fixture
def es() -> Kit:
    return Kit("ES256")


# --- the verified-token cache -------------------------------------------------------------

def test_a_hit_returns_equal_claims_that_the_caller_cannot_corrupt(es: Kit) -> None:
    validator = es.validator()
    token = es.token(aud=["orders", "x"], cnf={"jkt": ["a"]})
    first = validator.verify(token)
    first["aud"].append("mallory")
    first["cnf"]["jkt"].append("b")
    first["sub"] = "admin"
    second = validator.verify(token)
    assert second == json.loads(b64url_decode(token.split(".")[1]))
    second["aud"].clear()
    assert validator.verify(token)["aud"] == ["orders", "x"]
    assert validator.counters["cache_hits"] == 2 and validator.counters["cache_misses"] == 1


@pytest.mark.parametrize("revoke", ["jti", "bulk", "subject", "key"])
def test_a_revocation_applies_to_cached_tokens_at_once(es: Kit, revoke: str) -> None:
    validator = es.validator()
    token = es.token(jti="cached-1")
    validator.verify(token)
    now = int(es.clock())
    if revoke == "jti":
        es.event(EventType.TOKEN_REVOKED, {"jti": "cached-1", "expires_at": now + TTL})
    elif revoke == "bulk":
        es.event(EventType.TOKENS_REVOKED, {"tokens": {"other": now + TTL}})
        assert validator.verify(token)["jti"] == "cached-1"  # someone else's: still good (a hit)
        es.event(EventType.TOKENS_REVOKED, {"tokens": {f"x{i}": now + TTL for i in range(5000)} | {
            "cached-1": now + TTL}})
    elif revoke == "subject":
        es.event(EventType.SUBJECT_REVOKED, {"sub": "billing", "revoked_at": now, "expires_at": now + TTL})
    else:
        record = es.cache.record(es.key.kid)
        assert record is not None
        es.replace_key(record.model_copy(update={"state": KeyState.REVOKED, "revoked_at": now}),
                       EventType.KEY_REVOKED)
    assert refusal(validator, token) == ("key_revoked" if revoke == "key" else "revoked")
    assert validator.counters["cache_hits"] == (1 if revoke == "bulk" else 0)


def test_a_cached_token_still_expires(es: Kit) -> None:
    validator = es.validator(leeway=0)
    token = es.token()
    validator.verify(token)
    es.clock.advance(TTL - 1)
    assert validator.verify(token)["sub"] == "billing"
    es.clock.advance(1)
    assert refusal(validator, token) == "expired"


def test_a_cached_token_is_refused_once_the_issuer_lowers_the_maximum_lifetime(es: Kit) -> None:
    validator = es.validator()
    token = es.token()  # lives TTL seconds, the maximum so far
    validator.verify(token)
    assert validator.verify(token) and validator.counters["cache_hits"] == 1
    es.event(EventType.POLICY, {"max_token_ttl": TTL // 2, "heartbeat_interval": 5.0})
    assert refusal(validator, token) == "lifetime_exceeded"
    es.event(EventType.POLICY, {"max_token_ttl": TTL, "heartbeat_interval": 5.0})
    assert validator.verify(token)  # raising the maximum back needs no cache flush


def test_a_cached_token_of_an_expired_key_is_refused(es: Kit) -> None:
    validator = es.validator()
    token = es.token()
    validator.verify(token)
    es.event(EventType.KEY_EXPIRED, {"kid": es.key.kid})
    assert refusal(validator, token) == "unknown_key"


def test_the_cache_is_bounded_lru(es: Kit) -> None:
    validator = es.validator(cache_size=2)
    a, b, c = (es.token(jti=j) for j in "abc")
    for token in (a, b, a, c):  # a is used again before c arrives: b is the one evicted
        validator.verify(token)
    assert len(validator._cache) == 2
    validator.verify(a)
    validator.verify(c)
    assert validator.counters["cache_hits"] == 3
    validator.verify(b)
    assert validator.counters["cache_misses"] == 4
    off = es.validator(cache_size=0)
    off.verify(a)
    off.verify(a)
    assert off.counters["cache_hits"] == 0


# --- threads ------------------------------------------------------------------

def test_threads_verifying_while_events_arrive_see_claims_or_refusals_only(es: Kit) -> None:
    """The sync agent runs verify on request threads while the follower folds events."""
    validator = es.validator(cache_size=3)
    tokens = [es.token(jti=f"t{i}", sub=f"s{i}") for i in range(8)]
    failures: list[BaseException] = []

    def hammer() -> None:
        try:
            for _ in range(300):
                for token in tokens:
                    try:
                        validator.verify(token)
                    except InvalidToken:
                        pass
        except BaseException as exc:  # any escape at all fails the test below
            failures.append(exc)

    workers = [threading.Thread(target=hammer) for _ in range(4)]
    for worker in workers:
        worker.start()
    now = int(es.clock())
    for i in range(0, 8, 2):
        es.event(EventType.TOKEN_REVOKED, {"jti": f"t{i}", "expires_at": now + TTL})
    for worker in workers:
        worker.join()
    assert failures == []
    assert validator.counters["unexpected_errors"] == 0
    assert [refusal(validator, tokens[i]) for i in range(0, 8, 2)] == ["revoked"] * 4
    assert all(validator.verify(tokens[i])["jti"] == f"t{i}" for i in range(1, 8, 2))

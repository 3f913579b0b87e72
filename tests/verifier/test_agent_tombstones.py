"""Fast unit tests of the key cache's tombstones: what the agent saw revoked or expired stays
unusable whatever a later snapshot says, for a bounded time and in bounded number."""

from __future__ import annotations

import pytest

from keyherald.shared.chain import new_log_id
from keyherald.shared.events import Event, EventType, KeyRecord, KeyState
from keyherald.shared.jwk import SigningKey
from keyherald.shared.state import State
from keyherald.verifier import keycache
from keyherald.verifier.keycache import TOMBSTONE_MARGIN, KeyCache

ISSUER = "https://issuer.test"
LOG = new_log_id()


def _record(key: SigningKey, state: KeyState, **times: int) -> KeyRecord:
    return KeyRecord(kid=key.kid, alg=key.alg, jwk=key.public.jwk, state=state, published_at=100,
                     activated_at=100, **times)


def _load(cache: KeyCache, seq: int, time: float, *records: KeyRecord) -> None:
    cache.load_snapshot(State(issuer=ISSUER, log=LOG, seq=seq, head=f"head-{seq}", time=time, max_token_ttl=300,
                              keys={r.kid: r for r in records}).to_snapshot())


def test_a_key_seen_revoked_then_expired_comes_back_revoked_until_a_day_after_its_expiry() -> None:
    key = SigningKey.generate("ES256")
    cache = KeyCache(ISSUER)
    _load(cache, 5, 1_000.0, _record(key, KeyState.REVOKED, revoked_at=900, expires_at=1_500))
    cache.apply(Event(log=LOG, seq=6, prev="head-5", type=EventType.KEY_EXPIRED, time=1_600.0, issuer=ISSUER,
                      data={"kid": key.kid}), "head-6")
    assert cache.record(key.kid) is None and cache.verifying_key(key.kid) is None

    # A later log that never heard of the revocation holds it active.
    _load(cache, 2, 2_000.0, _record(key, KeyState.ACTIVE))
    record = cache.record(key.kid)
    assert record is not None and record.state is KeyState.REVOKED and record.revoked_at == 900

    # A day after its expiry the tombstone is gone: bounded, as the signing window refuses
    # fresh tokens of a key whose record says it stopped signing long ago anyway.
    _load(cache, 3, 1_500 + TOMBSTONE_MARGIN + 1.0, _record(key, KeyState.ACTIVE))
    record = cache.record(key.kid)
    assert record is not None and record.state is KeyState.ACTIVE and not cache.tombstones


def test_a_key_seen_expiring_after_retirement_is_dropped_from_a_later_snapshot() -> None:
    key, other = SigningKey.generate("ES256"), SigningKey.generate("EdDSA")
    cache = KeyCache(ISSUER)
    _load(cache, 5, 1_000.0, _record(key, KeyState.RETIRED, retired_at=900, expires_at=1_500),
          _record(other, KeyState.ACTIVE))
    # A resync from a newer snapshot where it is gone: it expired while the agent looked away.
    _load(cache, 9, 1_600.0, _record(other, KeyState.ACTIVE))
    _load(cache, 4, 1_700.0, _record(key, KeyState.ACTIVE), _record(other, KeyState.ACTIVE))
    assert cache.record(key.kid) is None and cache.verifying_key(key.kid) is None
    assert cache.record(other.kid) is not None


def test_keys_a_new_log_does_not_hold_are_not_tombstoned() -> None:
    """The old log's keys go with it on a reset, but come back if that log does."""
    key = SigningKey.generate("ES256")
    cache = KeyCache(ISSUER)
    _load(cache, 5, 1_000.0, _record(key, KeyState.ACTIVE))
    _load(cache, 1, 1_100.0)
    _load(cache, 6, 1_200.0, _record(key, KeyState.ACTIVE))
    assert cache.record(key.kid) is not None and not cache.tombstones


def test_tombstones_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keycache, "MAX_TOMBSTONES", 2)
    keys = [SigningKey.generate("EdDSA") for _ in range(3)]
    cache = KeyCache(ISSUER)
    _load(cache, 5, 1_000.0, *(
        _record(k, KeyState.REVOKED, revoked_at=900, expires_at=2_000 + i) for i, k in enumerate(keys)
    ))
    _load(cache, 6, 1_001.0)
    assert set(cache.tombstones) == {keys[1].kid, keys[2].kid}  # the soonest to end went first

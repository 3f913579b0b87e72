"""A key cache built from a signed snapshot, a clock, and a hand forge for tokens.

The validator tests need no Redis: they drive the same KeyCache the follower fills, through
a snapshot opened with the real TrustAnchor and events folded in with the real State.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from keyherald.issuer.tokens import sign_token
from keyherald.shared.chain import digest, genesis_head, new_log_id
from keyherald.shared.clock import ManualClock
from keyherald.shared.encoding import b64url_encode
from keyherald.shared.envelope import ControlKey
from keyherald.shared.events import Event, EventType, KeyRecord, KeyState, Snapshot
from keyherald.shared.jwk import Algorithm, SigningKey
from keyherald.shared.state import Outcome
from keyherald.verifier.errors import InvalidToken
from keyherald.verifier.keycache import KeyCache
from keyherald.verifier.validator import Validator

__all__ = ["AUDIENCE", "ISSUER", "TTL", "Kit", "forge", "refusal"]

ISSUER = "https://issuer.test"
AUDIENCE = "orders"
TTL = 300
_KEYS: dict[Algorithm, SigningKey] = {}


def _key(alg: Algorithm) -> SigningKey:
    """Keys are slow to make (RSA): one per algorithm for the whole run, like a real issuer."""
    if alg not in _KEYS:
        _KEYS[alg] = SigningKey.generate(alg)
    return _KEYS[alg]


def refusal(validator: Validator, token: str | bytes) -> str:
    """The reason ``token`` is refused; the message must not echo the token or a part of it."""
    try:
        validator.verify(token)
    except InvalidToken as exc:
        text = token.decode() if isinstance(token, bytes) else token
        assert all(len(part) < 8 or part not in str(exc) for part in text.split("."))
        return exc.reason
    raise AssertionError("the token was accepted")


def forge(header: dict[str, Any], claims: dict[str, Any] | bytes, sign: Callable[[bytes], bytes]) -> str:
    """A compact JWS with exactly the header given: for attacks the signer would never make."""
    body = claims if isinstance(claims, bytes) else json.dumps(claims).encode()
    signing_input = f"{b64url_encode(json.dumps(header).encode())}.{b64url_encode(body)}"
    return f"{signing_input}.{b64url_encode(sign(signing_input.encode()))}"


class Kit:
    """An issuer's view in miniature: one active key per algorithm, a clock, a KeyCache."""

    def __init__(self, alg: Algorithm = "ES256") -> None:
        self.clock = ManualClock()
        self.control = ControlKey.generate("EdDSA")
        self.key = _key(alg)
        self.others = {a: _key(a) for a in ("ES256", "EdDSA", "RS256") if a != alg}
        now = int(self.clock())
        records = [self.record(k, now - 3600) for k in (self.key, *self.others.values())]
        log_id = new_log_id()
        snapshot = Snapshot(
            issuer=ISSUER, log=log_id, log_started=self.clock(), seq=1, head=genesis_head(log_id),
            position="1-0", time=self.clock(), max_token_ttl=TTL, keys=records,
        )
        # Through the real envelope: what an agent bootstraps from.
        opened = self.control.anchor.open_snapshot(self.control.seal_snapshot(snapshot), issuer=ISSUER)
        self.cache = KeyCache(ISSUER)
        self.cache.load_snapshot(opened)

    @staticmethod
    def record(key: SigningKey, since: int, state: KeyState = KeyState.ACTIVE, **times: int) -> KeyRecord:
        return KeyRecord(
            kid=key.kid, alg=key.alg, jwk=key.public.jwk, state=state,
            published_at=since, activated_at=since, **times,
        )

    def validator(self, **options: Any) -> Validator:
        options.setdefault("issuer", ISSUER)
        options.setdefault("audience", AUDIENCE)
        return Validator(self.cache, clock=self.clock, **options)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": ISSUER, "aud": AUDIENCE, "sub": "billing", "iat": now, "exp": now + TTL,
            "jti": f"jti-{now}-{len(overrides)}", "scope": "orders:read",
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, key: SigningKey | None = None, **overrides: Any) -> str:
        """A token as the issuer signs it (``sign_token``); a claim set to None is left out."""
        return sign_token(self.claims(**overrides), key or self.key)

    def event(self, kind: EventType | str, data: dict[str, Any], *, advance: float = 0) -> None:
        """Fold one event, as the follower does after opening it."""
        self.clock.advance(advance)
        state = self.cache.state
        event = Event(log=state.log, seq=state.seq + 1, prev=state.head, type=str(kind), time=self.clock(),
                      issuer=ISSUER, data=data)
        sealed = self.control.seal_event(event)
        opened = self.control.anchor.open_event(sealed, issuer=ISSUER)
        assert self.cache.apply(opened, digest(sealed)) is Outcome.APPLIED

    def replace_key(self, record: KeyRecord, kind: EventType = EventType.KEY_RETIRED) -> None:
        self.event(kind, {"key": record.model_dump(mode="json")})

    def heartbeat(self) -> None:
        self.event(EventType.HEARTBEAT, {"active_kid": self.key.kid})

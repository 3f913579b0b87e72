"""Regenerate protocol.json (only when the wire format changes on purpose):

    uv run python tests/vectors/make_protocol.py > tests/vectors/protocol.json

Ed25519 signatures are deterministic, so the same key and document give the same bytes:
an agent written in another language can check itself against this file. PS256 (the
default control key, RSA-3072) signs with a random salt: its section holds a key made for
the file and envelopes to verify, not to reproduce.
"""

from __future__ import annotations

import json

from cryptography.hazmat.primitives.asymmetric import ed25519

from keyherald.shared.envelope import ControlKey
from keyherald.shared.events import Event, KeyRecord, KeyState, Snapshot
from keyherald.shared.jwk import SigningKey
from keyherald.shared.state import State

SEED = bytes(range(32))  # a test key, public on purpose
SIGNING_SEED = bytes(range(32, 64))


def main() -> None:
    control = ControlKey(SigningKey("EdDSA", ed25519.Ed25519PrivateKey.from_private_bytes(SEED)))
    token_key = SigningKey("EdDSA", ed25519.Ed25519PrivateKey.from_private_bytes(SIGNING_SEED))
    record = KeyRecord(
        kid=token_key.kid, alg="EdDSA", jwk=token_key.public.jwk, state=KeyState.ACTIVE,
        published_at=1800000000, activates_at=1800000000, activated_at=1800000000,
    )
    events = [
        Event(seq=1, type="policy.updated", time=1800000000.0, issuer="https://issuer.example",
              data={"max_token_ttl": 300}),
        Event(seq=2, type="key.published", time=1800000000.0, issuer="https://issuer.example",
              data={"key": record.model_copy(update={"state": KeyState.PUBLISHED, "activated_at": None})
                    .model_dump(mode="json")}),
        Event(seq=3, type="key.activated", time=1800000000.0, issuer="https://issuer.example",
              data={"key": record.model_dump(mode="json")}),
        Event(seq=4, type="token.revoked", time=1800000010.5, issuer="https://issuer.example",
              data={"jti": "4f1c", "expires_at": 1800000300}),
        Event(seq=5, type="heartbeat", time=1800000015.0, issuer="https://issuer.example",
              data={"active_kid": token_key.kid}),
    ]
    state = State(issuer="https://issuer.example")
    for event in events:
        state.apply(event)
    snapshot = state.to_snapshot()
    assert control.anchor.key is not None
    doc = {
        "comment": "keyherald protocol vectors; the control key seed is public: never use it",
        "control_seed_hex": SEED.hex(),
        "anchor_jwk": control.anchor.key.jwk,
        "anchor_thumbprint": control.anchor.thumbprint,
        "events": [{"event": e.model_dump(mode="json"), "jws": control.seal_event(e)} for e in events],
        "snapshot": {"snapshot": snapshot.model_dump(mode="json"), "jws": control.seal_snapshot(snapshot)},
        "ps256": _ps256(events, snapshot),
    }
    print(json.dumps(doc, indent=2, sort_keys=True))


def _ps256(events: list[Event], snapshot: Snapshot) -> dict[str, object]:
    control = ControlKey.generate("PS256")
    assert control.anchor.key is not None
    return {
        "anchor_jwk": control.anchor.key.jwk,
        "anchor_thumbprint": control.anchor.thumbprint,
        "events": [{"event": e.model_dump(mode="json"), "jws": control.seal_event(e)} for e in events],
        "snapshot": {"snapshot": snapshot.model_dump(mode="json"), "jws": control.seal_snapshot(snapshot)},
    }


if __name__ == "__main__":
    main()

"""Regenerate protocol.json (only when the wire format changes on purpose):

    uv run python tests/vectors/make_protocol.py > tests/vectors/protocol.json

Ed25519 signatures are deterministic, so the same key and document give the same bytes:
an agent written in another language can check itself against this file. PS256 (the
default control key, RSA-3072) signs with a random salt: its section holds a key made for
the file and envelopes to verify, not to reproduce.

Protocol 2.3 (2.2 with the checkpoint's ``revoked_tokens`` grouped by end; 2.2 added
``tokens.revoked``, the bulk form, whose envelope carries ``crit: ["khv"]``): every event
names its log and carries ``prev``, the digest (SHA-256, base64url) of the previous event's
compact JWS; the first event's ``prev`` is the log's genesis digest. The file holds the chain
of digests, the base checkpoint (seq 0) and the checkpoint the events fold into (in the 2.3
form, and the same state in 2.2's object form, which readers still open), an event spliced
from another log, an envelope of a future major version (3.0), which a reader must refuse
with "unsupported protocol version", and an anchor rotation (2.1): the link, the events on
both sides of it, and the checkpoint signed by the new key that an agent pinned to the old
one opens through the chain.
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from keyherald.shared.anchorchain import make_link
from keyherald.shared.chain import digest, genesis_head
from keyherald.shared.encoding import dumps
from keyherald.shared.envelope import EVENT_TYP, PROTOCOL_VERSION, SNAPSHOT_TYP, ControlKey
from keyherald.shared.events import Event, KeyRecord, KeyState
from keyherald.shared.jwk import SigningKey
from keyherald.shared.jws import sign_compact
from keyherald.shared.revocations import group_items
from keyherald.shared.state import State

SEED = bytes(range(32))  # a test key, public on purpose
SIGNING_SEED = bytes(range(32, 64))
NEXT_SEED = bytes(range(64, 96))  # the control key an anchor rotation introduces
ISSUER = "https://issuer.example"
LOG = "AAECAwQFBgcICQoLDA0ODw"  # 16 bytes 00..0f, base64url: fixed for the vectors
OTHER_LOG = "EBESExQVFhcYGRobHB0eHw"


def _drafts(token_key: SigningKey) -> list[tuple[str, float, dict[str, Any]]]:
    record = KeyRecord(
        kid=token_key.kid, alg="EdDSA", jwk=token_key.public.jwk, state=KeyState.ACTIVE,
        published_at=1800000000, activates_at=1800000000, activated_at=1800000000,
    )
    published = record.model_copy(update={"state": KeyState.PUBLISHED, "activated_at": None})
    return [
        ("log.started", 1800000000.0, {"previous": None, "reason": "genesis"}),
        ("policy.updated", 1800000000.0, {"max_token_ttl": 300, "heartbeat_interval": 5.0}),
        ("key.published", 1800000000.0, {"key": published.model_dump(mode="json")}),
        ("key.activated", 1800000000.0, {"key": record.model_dump(mode="json")}),
        ("token.revoked", 1800000010.5, {"jti": "4f1c", "expires_at": 1800000300}),
        ("tokens.revoked", 1800000011.0, {"tokens": {"5a2d": 1800000290, "6b3e": 1800000300, "7c4f": 1800000290}}),
        ("client.updated", 1800000012.0, {"client_id": "orders", "record": digest("a stored record")}),
        ("heartbeat", 1800000015.0, {"active_kid": token_key.kid}),
    ]


def _log(control: ControlKey, token_key: SigningKey) -> dict[str, Any]:
    state = State.empty(ISSUER, LOG)
    base = state.to_snapshot()
    events: list[dict[str, Any]] = []
    for kind, time, data in _drafts(token_key):
        event = Event(log=LOG, seq=state.seq + 1, prev=state.head, type=kind, time=time, issuer=ISSUER, data=data)
        if kind == "log.started":
            state.log_started = time
            base = base.model_copy(update={"log_started": time, "time": time})
        jws = control.seal_event(event)
        state.apply(event, digest(jws))
        events.append({"event": event.model_dump(mode="json"), "jws": jws, "digest": digest(jws)})
    snapshot = state.to_snapshot()
    return {
        "genesis_head": genesis_head(LOG),
        "base": {"snapshot": base.model_dump(mode="json"), "jws": control.seal_snapshot(base)},
        "events": events,
        "snapshot": {"snapshot": snapshot.model_dump(mode="json"), "jws": control.seal_snapshot(snapshot)},
    }


def _rotation(control: ControlKey, token_key: SigningKey, chain: dict[str, Any]) -> dict[str, Any]:
    """The log above, then an anchor rotation (signed by the old key), a heartbeat signed by the
    new one, and the checkpoint after it (signed by the new key, carrying the chain)."""
    nxt = ControlKey(SigningKey("EdDSA", ed25519.Ed25519PrivateKey.from_private_bytes(NEXT_SEED)))
    state = State.empty(ISSUER, LOG)
    for item in chain["events"]:
        state.apply(Event.model_validate(item["event"]), item["digest"])
    link = make_link(control, nxt, at=1800000020.0)
    events = []
    for kind, signer, data in (("anchor.rotated", control, link.model_dump(mode="json")),
                               ("heartbeat", nxt, {"active_kid": token_key.kid})):
        event = Event(log=LOG, seq=state.seq + 1, prev=state.head, type=kind, time=1800000020.0, issuer=ISSUER,
                      data=data)
        jws = signer.seal_event(event)
        state.apply(event, digest(jws))
        events.append({"event": event.model_dump(mode="json"), "jws": jws, "digest": digest(jws)})
    snapshot = state.to_snapshot()
    assert nxt.anchor.key is not None
    return {
        "next_seed_hex": NEXT_SEED.hex(), "next_anchor_jwk": nxt.anchor.key.jwk,
        "next_anchor_thumbprint": nxt.anchor.thumbprint, "link": link.model_dump(mode="json"), "events": events,
        "snapshot": {"snapshot": snapshot.model_dump(mode="json"), "jws": nxt.seal_snapshot(snapshot)},
        "why": "the link is endorsed by the old anchor and cross-signed by the new one; from the event after"
               " anchor.rotated on, the log is signed by the new key; an agent pinned to the old anchor opens"
               " the checkpoint through its anchors chain",
    }


def main() -> None:
    control = ControlKey(SigningKey("EdDSA", ed25519.Ed25519PrivateKey.from_private_bytes(SEED)))
    token_key = SigningKey("EdDSA", ed25519.Ed25519PrivateKey.from_private_bytes(SIGNING_SEED))
    assert control.anchor.key is not None
    chain = _log(control, token_key)
    spliced = Event(log=OTHER_LOG, seq=len(chain["events"]) + 1, prev=chain["events"][-1]["digest"],
                    type="heartbeat", time=1800000020.0, issuer=ISSUER, data={"active_kid": token_key.kid})
    future = Event(log=LOG, seq=len(chain["events"]) + 1, prev=chain["events"][-1]["digest"],
                   type="heartbeat", time=1800000020.0, issuer=ISSUER, data={"active_kid": token_key.kid})
    future_jws = sign_compact(
        {"typ": EVENT_TYP, "khv": "3.0"}, dumps(future.model_dump(mode="json")), control.signing_key
    )
    doc = {
        "comment": f"keyherald protocol {PROTOCOL_VERSION} vectors; the control key seeds are public: never use them",
        "protocol": PROTOCOL_VERSION,
        "issuer": ISSUER,
        "log": LOG,
        "control_seed_hex": SEED.hex(),
        "anchor_jwk": control.anchor.key.jwk,
        "anchor_thumbprint": control.anchor.thumbprint,
        **chain,
        "spliced": {"event": spliced.model_dump(mode="json"), "jws": control.seal_event(spliced),
                    "why": "a genuine event of another log at the next seq: refused (not this log)"},
        "future_version": {"jws": future_jws, "why": "khv 3.0: refused as an unsupported protocol version"},
        "snapshot_2_2": _older_form(control, chain["snapshot"]["snapshot"]),
        "ps256": _ps256(token_key),
        "rotation": _rotation(control, token_key, chain),
    }
    print(json.dumps(doc, indent=2, sort_keys=True))


def _older_form(control: ControlKey, snapshot: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint above as a 2.2 issuer wrote it: revoked_tokens an object jti -> end."""
    older = {**snapshot, "revoked_tokens": dict(group_items(snapshot["revoked_tokens"]))}
    header = {"typ": SNAPSHOT_TYP, "khv": "2.2", "jwk": control.signing_key.public.jwk}
    return {"snapshot": older, "jws": sign_compact(header, dumps(older), control.signing_key),
            "why": "2.2's form of the same checkpoint: a 2.3 reader opens it to the same state"}


def _ps256(token_key: SigningKey) -> dict[str, object]:
    control = ControlKey.generate("PS256")
    assert control.anchor.key is not None
    return {"anchor_jwk": control.anchor.key.jwk, "anchor_thumbprint": control.anchor.thumbprint,
            **_log(control, token_key)}


if __name__ == "__main__":
    main()

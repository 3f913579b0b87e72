"""Anchor rotation links and chains, against the vectors and against forgeries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from keyherald.shared.anchorchain import MAX_CHAIN, after_event, follow, make_link, open_link, open_snapshot
from keyherald.shared.chain import digest
from keyherald.shared.envelope import ControlKey, TrustAnchor
from keyherald.shared.errors import BadSignature, BrokenAnchorChain, UntrustedSigner
from keyherald.shared.events import AnchorLink, Event
from keyherald.shared.jwk import SigningKey
from keyherald.shared.state import Outcome, State

VECTORS = json.loads((Path(__file__).parent.parent / "vectors" / "protocol.json").read_text())
ROTATION = VECTORS["rotation"]
ISSUER = VECTORS["issuer"]


def _key(seed_hex: str) -> ControlKey:
    return ControlKey(SigningKey("EdDSA", ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed_hex))))


def test_the_vector_link_is_reproduced_byte_for_byte_and_verifies() -> None:
    old, new = _key(VECTORS["control_seed_hex"]), _key(ROTATION["next_seed_hex"])
    link = AnchorLink.model_validate(ROTATION["link"])
    assert make_link(old, new, at=link.at).model_dump(mode="json") == ROTATION["link"]
    assert open_link(link, old.signing_key.public).kid == ROTATION["next_anchor_thumbprint"]


def test_the_vector_log_folds_across_the_rotation_and_its_checkpoint_opens_from_the_old_pin() -> None:
    anchor = TrustAnchor.from_jwk(VECTORS["anchor_jwk"])
    state = State.empty(ISSUER, VECTORS["log"])
    for item in [*VECTORS["events"], *ROTATION["events"]]:
        event = anchor.open_event(item["jws"], issuer=ISSUER)
        assert event.model_dump(mode="json") == item["event"] and digest(item["jws"]) == item["digest"]
        assert state.apply(event, item["digest"]) is Outcome.APPLIED
        anchor = after_event(anchor, event)
    assert anchor.thumbprint == state.anchor == ROTATION["next_anchor_thumbprint"]
    assert state.to_snapshot().model_dump(mode="json") == ROTATION["snapshot"]["snapshot"]
    for pin in (TrustAnchor.from_jwk(VECTORS["anchor_jwk"]), TrustAnchor(VECTORS["anchor_thumbprint"])):
        snapshot, signer = open_snapshot(pin, ROTATION["snapshot"]["jws"], issuer=ISSUER)
        assert signer.thumbprint == ROTATION["next_anchor_thumbprint"] and snapshot.seq == state.seq


def test_the_old_key_opens_nothing_after_the_rotation() -> None:
    anchor = TrustAnchor.from_jwk(VECTORS["anchor_jwk"])
    with pytest.raises(UntrustedSigner):
        anchor.open_event(ROTATION["events"][1]["jws"], issuer=ISSUER)  # signed by the new key


@pytest.fixture
def keys() -> list[ControlKey]:
    return [ControlKey.generate("EdDSA") for _ in range(4)]


def test_a_link_needs_both_signatures(keys: list[ControlKey]) -> None:
    old, new, other = keys[:3]
    good = make_link(old, new, at=1.0)
    previous = old.signing_key.public
    for forged, error in (
        (good.model_copy(update={"cross": make_link(old, other, at=1.0).cross}), BrokenAnchorChain),
        (good.model_copy(update={"endorsement": make_link(other, new, at=1.0).endorsement}), BrokenAnchorChain),
        (good.model_copy(update={"at": 2.0}), BadSignature),  # the words both signed are not these
        (good.model_copy(update={"revoke_previous": True}), BadSignature),
    ):
        with pytest.raises(error):
            open_link(forged, previous)
    with pytest.raises(BrokenAnchorChain):
        open_link(good, other.signing_key.public)  # does not start at this anchor


def test_a_chain_is_followed_from_any_pin_it_holds_and_from_no_other(keys: list[ControlKey]) -> None:
    a, b, c, stranger = keys
    chain = [make_link(a, b, at=1.0), make_link(b, c, at=2.0)]
    target = c.anchor.thumbprint
    assert follow(a.anchor, chain, target).thumbprint == target
    assert follow(b.anchor, chain, target).thumbprint == target
    assert follow(TrustAnchor(a.anchor.thumbprint), chain, target).thumbprint == target
    with pytest.raises(BrokenAnchorChain, match="pin the current anchor"):
        follow(stranger.anchor, chain, target)
    spliced = make_link(stranger, c, at=2.0).model_copy(update={"previous": b.anchor.thumbprint})
    with pytest.raises(BrokenAnchorChain):  # b -> c replaced by a link b never made
        follow(a.anchor, [chain[0], spliced], target)


def test_the_state_keeps_a_bounded_chain_and_forgets_it_on_revoke_previous(keys: list[ControlKey]) -> None:
    state = State.empty(ISSUER, "AAECAwQFBgcICQoLDA0ODw")
    current = keys[0]
    for i in range(MAX_CHAIN + 3):
        new = ControlKey.generate("EdDSA")
        link = make_link(current, new, at=float(i), revoke_previous=(i == MAX_CHAIN + 2))
        event = Event(log=state.log, seq=state.seq + 1, prev=state.head, type="anchor.rotated", time=float(i),
                      issuer=ISSUER, data=link.model_dump(mode="json"))
        assert state.apply(event, f"d{i}") is Outcome.APPLIED
        assert len(state.anchors) <= MAX_CHAIN
        current = new
    assert state.anchor == current.anchor.thumbprint and state.anchors == []

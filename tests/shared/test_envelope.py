"""Opening events and snapshots: the one code path both sides trust, against forgery."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from keyherald.shared.chain import digest, genesis_head
from keyherald.shared.encoding import b64url_decode, b64url_encode, dumps
from keyherald.shared.envelope import ControlKey, TrustAnchor
from keyherald.shared.errors import BadSignature, MalformedMessage, UnsupportedVersion, UntrustedSigner, WrongIssuer
from keyherald.shared.events import Event, Snapshot
from keyherald.shared.jwk import SigningKey
from keyherald.shared.jws import sign_compact
from keyherald.shared.revocations import group_items
from keyherald.shared.state import Outcome, State

VECTORS = json.loads((Path(__file__).parent.parent / "vectors" / "protocol.json").read_text())
ISSUER = "https://issuer.example"
LOG = VECTORS["log"]
REVOKED = 4  # the token.revoked event


@pytest.fixture
def control() -> ControlKey:
    seed = bytes.fromhex(VECTORS["control_seed_hex"])
    return ControlKey(SigningKey("EdDSA", ed25519.Ed25519PrivateKey.from_private_bytes(seed)))


@pytest.fixture
def anchor() -> TrustAnchor:
    return TrustAnchor.from_jwk(VECTORS["anchor_jwk"])


def test_vectors_open_to_their_documents(anchor: TrustAnchor) -> None:
    for item in VECTORS["events"]:
        assert anchor.open_event(item["jws"], issuer=ISSUER).model_dump(mode="json") == item["event"]
    snap = VECTORS["snapshot"]
    assert anchor.open_snapshot(snap["jws"], issuer=ISSUER).model_dump(mode="json") == snap["snapshot"]


def test_sealing_is_byte_for_byte_stable(control: ControlKey) -> None:
    """The wire format: canonical JSON, deterministic Ed25519. Changing it breaks other agents."""
    for item in VECTORS["events"]:
        assert control.seal_event(Event.model_validate(item["event"])) == item["jws"]
    snap = VECTORS["snapshot"]
    assert control.seal_snapshot(Snapshot.model_validate(snap["snapshot"])) == snap["jws"]


def test_folding_the_vector_events_gives_the_vector_snapshot(anchor: TrustAnchor) -> None:
    state = State.empty(ISSUER, LOG)
    assert state.head == VECTORS["genesis_head"] == genesis_head(LOG)
    for item in VECTORS["events"]:
        assert digest(item["jws"]) == item["digest"]
        assert state.apply(anchor.open_event(item["jws"]), digest(item["jws"])) is Outcome.APPLIED
    assert state.to_snapshot().model_dump(mode="json") == VECTORS["snapshot"]["snapshot"]


def test_the_base_checkpoint_plus_the_events_is_the_checkpoint(anchor: TrustAnchor) -> None:
    base = anchor.open_snapshot(VECTORS["base"]["jws"], issuer=ISSUER)
    assert base.seq == 0 and base.head == genesis_head(LOG) and base.log == LOG
    state = State.from_snapshot(base)
    for item in VECTORS["events"]:
        assert state.apply(anchor.open_event(item["jws"]), item["digest"]) is Outcome.APPLIED
    assert state.to_snapshot().model_dump(mode="json") == VECTORS["snapshot"]["snapshot"]


def test_each_event_chains_to_the_previous_one(anchor: TrustAnchor) -> None:
    events = VECTORS["events"]
    assert events[0]["event"]["prev"] == genesis_head(LOG)
    for before, after in itertools.pairwise(events):
        assert after["event"]["prev"] == before["digest"]
        assert after["event"]["log"] == LOG


def test_an_event_that_does_not_extend_the_chain_is_not_applied(anchor: TrustAnchor, control: ControlKey) -> None:
    state = State.empty(ISSUER, LOG)
    for item in VECTORS["events"][:3]:
        state.apply(anchor.open_event(item["jws"]), item["digest"])
    # The genuine next event, re-signed with another prev: a fork, never applied.
    forked = Event.model_validate({**VECTORS["events"][3]["event"], "prev": VECTORS["events"][1]["digest"]})
    text = control.seal_event(forked)
    before = state.to_snapshot()
    assert state.apply(anchor.open_event(text), digest(text)) is Outcome.BROKEN
    assert state.to_snapshot() == before


def test_an_event_spliced_from_another_log_is_not_applied(anchor: TrustAnchor) -> None:
    state = State.empty(ISSUER, LOG)
    for item in VECTORS["events"]:
        state.apply(anchor.open_event(item["jws"]), item["digest"])
    spliced = VECTORS["spliced"]
    event = anchor.open_event(spliced["jws"], issuer=ISSUER)  # genuine: signed by our control key
    assert event.seq == state.seq + 1 and event.prev == state.head  # even its prev fits
    assert state.apply(event, digest(spliced["jws"])) is Outcome.FOREIGN
    assert state.seq == len(VECTORS["events"])


def test_a_future_major_version_is_refused_as_unsupported(anchor: TrustAnchor) -> None:
    with pytest.raises(UnsupportedVersion, match=r"unsupported protocol version 3\.0"):
        anchor.open_event(VECTORS["future_version"]["jws"], issuer=ISSUER)


def test_junk_claiming_a_future_version_is_only_junk(anchor: TrustAnchor) -> None:
    """Only the issuer's signature makes "unsupported version" the verdict: junk that claims
    a future version cannot pose as a newer log and stop an agent."""
    header, payload, signature = VECTORS["future_version"]["jws"].split(".")
    tampered = ".".join([header, payload[:-4] + "AAAA", signature])
    with pytest.raises((BadSignature, MalformedMessage)):
        anchor.open_event(tampered, issuer=ISSUER)


def test_an_envelope_without_a_version_is_protocol_1_and_refused(anchor: TrustAnchor, control: ControlKey) -> None:
    from keyherald.shared.envelope import EVENT_TYP

    text = sign_compact({"typ": EVENT_TYP}, dumps(VECTORS["events"][0]["event"]), control.signing_key)
    with pytest.raises(UnsupportedVersion, match="version 1"):
        anchor.open_event(text)


def test_event_forged_with_another_control_key_is_refused(anchor: TrustAnchor) -> None:
    forger = ControlKey.generate("EdDSA")
    forged = forger.seal_event(Event.model_validate(VECTORS["events"][REVOKED]["event"]))
    with pytest.raises(UntrustedSigner):
        anchor.open_event(forged)


def test_forger_claiming_our_kid_fails_the_signature(anchor: TrustAnchor) -> None:
    forger = ControlKey.generate("EdDSA")
    forged = forger.seal_event(Event.model_validate(VECTORS["events"][REVOKED]["event"]))
    header, payload, signature = forged.split(".")
    fake_header = json.loads(b64url_decode(header))
    fake_header["kid"] = anchor.thumbprint
    relabelled = ".".join([b64url_encode(json.dumps(fake_header).encode()), payload, signature])
    with pytest.raises(BadSignature):
        anchor.open_event(relabelled)


def test_tampered_event_is_refused(anchor: TrustAnchor) -> None:
    header, payload, signature = VECTORS["events"][REVOKED]["jws"].split(".")
    doc = json.loads(b64url_decode(payload))
    doc["data"]["expires_at"] += 1
    tampered = ".".join([header, b64url_encode(json.dumps(doc).encode()), signature])
    with pytest.raises(BadSignature):
        anchor.open_event(tampered)


@pytest.mark.parametrize("garbage", ["", "x", "a.b.c", "a.b", "....", "{}", "é.é.é", "e30.e30.e30"])
def test_garbage_is_malformed(anchor: TrustAnchor, garbage: str) -> None:
    with pytest.raises(MalformedMessage):
        anchor.open_event(garbage)


def test_snapshot_cannot_pass_for_an_event_or_back(anchor: TrustAnchor) -> None:
    with pytest.raises(MalformedMessage):
        anchor.open_event(VECTORS["snapshot"]["jws"])
    with pytest.raises(MalformedMessage):
        anchor.open_snapshot(VECTORS["events"][0]["jws"])


def test_event_of_another_issuer_is_refused(anchor: TrustAnchor) -> None:
    with pytest.raises(WrongIssuer):
        anchor.open_event(VECTORS["events"][0]["jws"], issuer="https://other.example")


def test_replayed_event_changes_nothing(anchor: TrustAnchor) -> None:
    state = State.empty(ISSUER, LOG)
    for item in VECTORS["events"]:
        state.apply(anchor.open_event(item["jws"]), item["digest"])
    before = state.to_snapshot()
    assert state.apply(anchor.open_event(VECTORS["events"][1]["jws"]), VECTORS["events"][1]["digest"]) is Outcome.OLD
    assert state.to_snapshot() == before


def test_a_skipped_seq_is_reported_as_a_gap(anchor: TrustAnchor) -> None:
    state = State.empty(ISSUER, LOG)
    state.apply(anchor.open_event(VECTORS["events"][0]["jws"]), VECTORS["events"][0]["digest"])
    assert state.apply(anchor.open_event(VECTORS["events"][2]["jws"]), VECTORS["events"][2]["digest"]) is Outcome.GAP
    assert state.seq == 1


def test_thumbprint_anchor_binds_the_key_from_the_snapshot() -> None:
    anchor = TrustAnchor.parse(VECTORS["anchor_thumbprint"])
    with pytest.raises(UntrustedSigner):
        anchor.open_event(VECTORS["events"][0]["jws"])  # nothing bound yet
    anchor.open_snapshot(VECTORS["snapshot"]["jws"])
    assert anchor.open_event(VECTORS["events"][0]["jws"]).seq == 1


def test_thumbprint_anchor_refuses_a_snapshot_of_another_key() -> None:
    other = ControlKey.generate("EdDSA")
    snapshot = other.seal_snapshot(Snapshot.model_validate(VECTORS["snapshot"]["snapshot"]))
    with pytest.raises(UntrustedSigner):
        TrustAnchor.parse(VECTORS["anchor_thumbprint"]).open_snapshot(snapshot)


def test_anchor_parses_jwk_text_and_files(tmp_path: Path) -> None:
    text = json.dumps(VECTORS["anchor_jwk"])
    assert TrustAnchor.parse(text).thumbprint == VECTORS["anchor_thumbprint"]
    path = tmp_path / "anchor.json"
    path.write_text(text)
    assert TrustAnchor.parse(str(path)).key is not None
    with pytest.raises(ValueError):
        TrustAnchor.parse("not-a-thumbprint")
    with pytest.raises(ValueError):
        TrustAnchor.parse('{"kty": "EC"')


def test_an_anchor_is_an_rsa_or_ed25519_control_key() -> None:
    for alg in ("ES256",):
        with pytest.raises(ValueError):
            TrustAnchor.from_jwk(SigningKey.generate(alg).public.jwk)
    small_rsa = SigningKey.generate("RS256", rsa_bits=2048).public.jwk
    with pytest.raises(ValueError, match="3072"):
        TrustAnchor.from_jwk({**small_rsa, "alg": "PS256"})
    with pytest.raises(ValueError, match="PS256"):  # an RSA anchor never verifies PKCS#1 v1.5
        TrustAnchor.from_jwk(VECTORS["ps256"]["anchor_jwk"] | {"alg": "RS256"})
    bare = {k: v for k, v in VECTORS["ps256"]["anchor_jwk"].items() if k in ("kty", "n", "e")}
    anchor = TrustAnchor.from_jwk(bare)  # no alg: an RSA control key is PS256
    assert anchor.key is not None and anchor.key.alg == "PS256"
    assert anchor.thumbprint == VECTORS["ps256"]["anchor_thumbprint"]


def test_ps256_vectors_open_to_their_documents() -> None:
    ps = VECTORS["ps256"]
    anchor = TrustAnchor.from_jwk(ps["anchor_jwk"])
    state = State.empty(ISSUER, LOG)
    for item in ps["events"]:
        event = anchor.open_event(item["jws"], issuer=ISSUER)
        assert event.model_dump(mode="json") == item["event"]
        assert state.apply(event, digest(item["jws"])) is Outcome.APPLIED
    pinned = TrustAnchor.parse(ps["anchor_thumbprint"])  # binds the key the snapshot carries
    snapshot = pinned.open_snapshot(ps["snapshot"]["jws"], issuer=ISSUER)
    assert snapshot.model_dump(mode="json") == ps["snapshot"]["snapshot"] == state.to_snapshot().model_dump(mode="json")
    assert pinned.key is not None and pinned.key.alg == "PS256"


def test_a_ps256_envelope_relabelled_to_another_algorithm_is_refused() -> None:
    ps = VECTORS["ps256"]
    anchor = TrustAnchor.from_jwk(ps["anchor_jwk"])
    header, payload, signature = ps["events"][3]["jws"].split(".")
    for alg in ("RS256", "EdDSA", "none", "HS256"):
        fake = dict(json.loads(b64url_decode(header)), alg=alg)
        relabelled = ".".join([b64url_encode(json.dumps(fake).encode()), payload, signature])
        with pytest.raises(MalformedMessage):
            anchor.open_event(relabelled)
    assert anchor.open_event(ps["events"][3]["jws"]).seq == 4  # the header cache holds no lie


def test_a_tampered_ps256_event_is_refused() -> None:
    ps = VECTORS["ps256"]
    anchor = TrustAnchor.from_jwk(ps["anchor_jwk"])
    anchor.open_event(ps["events"][3]["jws"])  # its header is now known
    header, payload, signature = ps["events"][3]["jws"].split(".")
    doc = json.loads(b64url_decode(payload))
    doc["data"]["jti"] = "someone-else"
    with pytest.raises(BadSignature):
        anchor.open_event(".".join([header, b64url_encode(json.dumps(doc).encode()), signature]))
    with pytest.raises(MalformedMessage):
        anchor.open_event(".".join([header, payload, signature + "A"]))


def test_a_control_key_is_ps256_by_default_and_signs_what_its_anchor_opens() -> None:
    control = ControlKey.generate()
    assert control.alg == "PS256" and control.signing_key.public.jwk["kty"] == "RSA"
    event = Event.model_validate(VECTORS["events"][REVOKED]["event"])
    assert control.anchor.open_event(control.seal_event(event)) == event
    with pytest.raises(ValueError):
        ControlKey(SigningKey.generate("ES256"))
    with pytest.raises(ValueError):
        ControlKey(SigningKey.generate("PS256", rsa_bits=2048))


def test_a_bulk_revocation_says_it_must_be_understood_and_nothing_else_may(
    control: ControlKey, anchor: TrustAnchor
) -> None:
    """``tokens.revoked`` carries crit ["khv"]: a 2.1 reader (no crit allowed) refuses it and
    resyncs instead of following on without it; a 2.2 reader opens it, and refuses any other crit."""
    bulk = VECTORS["events"][REVOKED + 1]
    assert bulk["event"]["type"] == "tokens.revoked"
    header = json.loads(b64url_decode(bulk["jws"].split(".")[0]))
    assert header["crit"] == ["khv"] and header["khv"] == "2.3"
    assert anchor.open_event(bulk["jws"]).data["tokens"] == {"5a2d": 1800000290, "6b3e": 1800000300, "7c4f": 1800000290}
    single = json.loads(b64url_decode(VECTORS["events"][REVOKED]["jws"].split(".")[0]))
    assert "crit" not in single
    event = Event.model_validate(bulk["event"])
    for crit in (["exp"], ["khv", "exp"], "khv", []):

        text = sign_compact({"typ": "keyherald-event+jws", "khv": "2.2", "crit": crit},
                            dumps(event.model_dump(mode="json")), control.signing_key)
        with pytest.raises(MalformedMessage, match="crit"):
            anchor.open_event(text)


@pytest.mark.parametrize("tokens", [
    {"j": "1800000300"}, {"j": 1.5}, {"j": True}, {"j": None}, ["j"], [[1800000300, "j"]], [[1800000300, []]],
    [[1800000300.0, ["j"]]], [[True, ["j"]]], [[1800000300, ["j", 7]]], [[1800000300, ["j"], 1]], [[1800000300]],
    [{"1800000300": ["j"]}], "j",
])
def test_a_checkpoint_whose_revoked_tokens_are_malformed_is_refused(
    control: ControlKey, anchor: TrustAnchor, tokens: object
) -> None:
    document = {**VECTORS["snapshot"]["snapshot"], "revoked_tokens": tokens}
    header = {"typ": "keyherald-snapshot+jws", "khv": "2.3", "jwk": control.signing_key.public.jwk}
    with pytest.raises(MalformedMessage, match="not a valid document"):
        anchor.open_snapshot(sign_compact(header, dumps(document), control.signing_key))
    good = {**document, "revoked_tokens": [[1800000300, ["j", "k"]]]}
    opened = anchor.open_snapshot(sign_compact(header, dumps(good), control.signing_key))
    assert dict(group_items(opened.revoked_tokens)) == {"j": 1800000300, "k": 1800000300}


def test_a_checkpoint_in_the_2_2_form_opens_to_the_same_state(anchor: TrustAnchor) -> None:
    """Agents are upgraded before issuers: a 2.3 agent reads a 2.2 issuer's checkpoint."""
    older = anchor.open_snapshot(VECTORS["snapshot_2_2"]["jws"], issuer=ISSUER)
    newer = anchor.open_snapshot(VECTORS["snapshot"]["jws"], issuer=ISSUER)
    assert older == newer and len(newer.revoked_tokens) == 2
    assert State.from_snapshot(older).to_snapshot().model_dump(mode="json") == VECTORS["snapshot"]["snapshot"]


def test_a_jti_listed_in_two_groups_keeps_its_later_end(control: ControlKey, anchor: TrustAnchor) -> None:
    """Not what an issuer writes; a reader still gives it the fold's meaning (the agent's store too:
    tests/verifier/test_revocation_store.py)."""
    document = {**VECTORS["snapshot"]["snapshot"], "revoked_tokens": [[1800000300, ["j"]], [1800000200, ["j", "k"]]]}
    header = {"typ": "keyherald-snapshot+jws", "khv": "2.3", "jwk": control.signing_key.public.jwk}
    opened = anchor.open_snapshot(sign_compact(header, dumps(document), control.signing_key))
    state = State.from_snapshot(opened)
    assert dict(state.revoked_tokens.items()) == {"j": 1800000300, "k": 1800000200}  # type: ignore[attr-defined]

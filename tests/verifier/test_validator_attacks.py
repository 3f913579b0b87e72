"""Attack tokens crafted by hand, each refused with the reason a service's logs should show.

The attacker here knows every public key and can sign with keys of their own; what they
lack is the issuer's private keys. Each forged token would fool at least one classic JWT
pitfall: the algorithm taken from the header, a key taken from the header, lenient decoding.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from keyherald.shared.clock import ManualClock
from keyherald.shared.encoding import b64url_decode, b64url_encode
from keyherald.shared.envelope import TrustAnchor
from keyherald.shared.events import EventType, KeyState
from keyherald.shared.jwk import SigningKey
from keyherald.verifier.errors import InvalidToken
from keyherald.verifier.keycache import KeyCache
from keyherald.verifier.validator import MAX_TOKEN_LENGTH, Validator

from .validator_kit import Kit, forge


def refusal(validator: Validator, token: Any) -> str:
    with pytest.raises(InvalidToken) as caught:
        validator.verify(token)
    message = str(caught.value)
    if isinstance(token, str) and len(token) >= 8:
        assert token not in message and all(len(p) < 8 or p not in message for p in token.split("."))
    assert len(message) < 80  # a short fixed phrase, nothing from the input
    return caught.value.reason


@pytest.fixture
def es() -> Kit:
    return Kit("ES256")


def header(kit: Kit, **changes: Any) -> dict[str, Any]:
    values = {"alg": kit.key.alg, "kid": kit.key.kid, "typ": "at+jwt", **changes}
    return {k: v for k, v in values.items() if v is not None}


def hs256(secret: bytes) -> Any:
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


# --- the algorithm and the key come from the agent, never from the token ----------------------

@pytest.mark.parametrize("alg", ["none", "None", "NONE", ""])
def test_alg_none_is_refused(es: Kit, alg: str) -> None:
    token = forge(header(es, alg=alg), es.claims(), lambda data: b"")
    assert refusal(es.validator(), token) == "algorithm_not_allowed"
    assert refusal(es.validator(), token + "AAAA") == "algorithm_not_allowed"


@pytest.mark.parametrize("alg", ["ES256", "RS256", "EdDSA"])
def test_hs256_signed_with_the_public_key_is_refused(alg: str) -> None:
    """The classic confusion: verify HMAC with the public key bytes as the secret."""
    kit = Kit(alg)  # type: ignore[arg-type]
    public = kit.key.public.public_key
    secrets = [
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
        json.dumps(kit.key.public.jwk).encode(),
    ]
    validator = kit.validator()
    for secret in secrets:
        for hs in ("HS256", "HS384", "HS512"):
            token = forge(header(kit, alg=hs), kit.claims(), hs256(secret))
            assert refusal(validator, token) == "algorithm_not_allowed"


def test_an_alg_other_than_the_keys_own_is_refused(es: Kit) -> None:
    """An allowed algorithm still has to be the one the kid's key is bound to."""
    rsa = es.others["RS256"]
    for alg, signer in (("RS256", rsa.sign), ("EdDSA", es.others["EdDSA"].sign), ("PS256", rsa.sign),
                        ("ES384", es.key.sign)):
        token = forge(header(es, alg=alg), es.claims(), signer)
        assert refusal(es.validator(), token) == "algorithm_not_allowed"


@pytest.mark.parametrize("name", ["jwk", "jku", "x5u", "x5c"])
def test_a_header_that_supplies_a_key_is_refused(es: Kit, name: str) -> None:
    mallory = SigningKey.generate("ES256")
    value: Any = {
        "jwk": mallory.public.jwk,
        "jku": "https://mallory.test/jwks.json",
        "x5u": "https://mallory.test/cert.pem",
        "x5c": ["MIIBszCCAVmgAwIBAgIUQ"],
    }[name]
    # Signed by Mallory's key, naming it (or the trusted kid): both ways refused.
    for kid in (mallory.kid, es.key.kid):
        token = forge(header(es, kid=kid, **{name: value}), es.claims(), mallory.sign)
        assert refusal(es.validator(), token) == "algorithm_not_allowed"
    # Even a genuine token with the header added is refused: we never look at it.
    genuine = forge(header(es, **{name: value}), es.claims(), es.key.sign)
    assert refusal(es.validator(), genuine) == "algorithm_not_allowed"


@pytest.mark.parametrize("crit", [["exp"], ["b64"], [], "b64"])
def test_any_crit_is_malformed(es: Kit, crit: Any) -> None:
    token = forge(header(es, crit=crit, b64=False), es.claims(), es.key.sign)
    assert refusal(es.validator(), token) == "malformed"


@pytest.mark.parametrize("typ", [None, "JWT", "jwt", "at+jwt ", "application/jwt", 1, ["at+jwt"]])
def test_a_typ_other_than_at_jwt_is_malformed(es: Kit, typ: Any) -> None:
    """RFC 9068: an ID token or any other JWT may not pass as an access token."""
    values = header(es)
    values.pop("typ")
    if typ is not None:
        values["typ"] = typ
    assert refusal(es.validator(), forge(values, es.claims(), es.key.sign)) == "malformed"


@pytest.mark.parametrize("kid", [None, "", 7, ["x"], "k" * 300])
def test_a_missing_or_odd_kid_is_malformed(es: Kit, kid: Any) -> None:
    values = header(es)
    values.pop("kid")
    if kid is not None:
        values["kid"] = kid
    assert refusal(es.validator(), forge(values, es.claims(), es.key.sign)) == "malformed"


def test_the_kid_of_a_revoked_key_is_refused_even_with_a_valid_signature(es: Kit) -> None:
    validator = es.validator()
    record = es.cache.record(es.key.kid)
    assert record is not None
    now = int(es.clock())
    es.replace_key(record.model_copy(update={"state": KeyState.REVOKED, "revoked_at": now}),
                   EventType.KEY_REVOKED)
    assert refusal(validator, es.token()) == "key_revoked"


def test_a_retired_key_cannot_mint_fresh_tokens(es: Kit) -> None:
    validator = es.validator(leeway=30)
    record = es.cache.record(es.key.kid)
    assert record is not None
    es.replace_key(record.model_copy(update={"state": KeyState.RETIRED, "retired_at": int(es.clock())}))
    es.clock.advance(31)
    assert refusal(validator, es.token()) == "key_not_active"


# --- one spelling only: no padding, no whitespace, no spare bits, no duplicate members --------

def _parts(token: str) -> list[str]:
    return token.split(".")


@pytest.mark.parametrize("index", [0, 1, 2])
def test_padding_on_any_part_is_malformed(index: int) -> None:
    kit = Kit("EdDSA")  # 64-byte signature: 86 characters, so "==" would be its padding
    parts = _parts(kit.token())
    parts[index] += "=" * (-len(parts[index]) % 4 or 4)
    assert refusal(kit.validator(), ".".join(parts)) == "malformed"


@pytest.mark.parametrize("where", ["lead", "trail", "inner", "newline", "tab", "dot"])
def test_whitespace_anywhere_is_malformed(es: Kit, where: str) -> None:
    token = es.token()
    head, body, sig = _parts(token)
    variant = {
        "lead": " " + token, "trail": token + "\n", "inner": f"{head}.{body[:10]} {body[10:]}.{sig}",
        "newline": f"{head}.{body}.{sig[:20]}\n{sig[20:]}", "tab": f"{head}\t.{body}.{sig}",
        "dot": f"{head}. {body}.{sig}",
    }[where]
    assert refusal(es.validator(), variant) == "malformed"


def test_non_canonical_trailing_bits_are_malformed() -> None:
    """Two spellings of one signature: a lenient decoder accepts both, so a token-keyed cache
    or a denylist of token strings could be sidestepped. The strict decoder refuses it."""
    kit = Kit("EdDSA")
    validator = kit.validator()
    token = kit.token()
    head, body, sig = _parts(token)
    assert len(sig) % 4 == 2  # the last character carries 4 spare bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = sig[:-1] + alphabet[alphabet.index(sig[-1]) | 1]
    assert base64.urlsafe_b64decode(twin + "==") == b64url_decode(sig)  # same bytes, leniently
    assert validator.verify(token)["sub"] == "billing"
    assert refusal(validator, f"{head}.{body}.{twin}") == "malformed"


def test_foreign_base64_characters_are_malformed(es: Kit) -> None:
    # ES256 signatures are random: take one whose base64url holds a '-' or '_' (about 94 %).
    head, body, sig = next(p for p in (_parts(es.token()) for _ in range(200)) if "-" in p[2] or "_" in p[2])
    std = base64.b64encode(b64url_decode(sig)).decode().rstrip("=")
    assert std != sig  # it holds a '+' or '/'
    assert refusal(es.validator(), f"{head}.{body}.{std}") == "malformed"
    assert refusal(es.validator(), f"{head}.{body}.{sig[:-1]}*") == "malformed"


def test_duplicate_members_are_malformed(es: Kit) -> None:
    """A parser that keeps the first and one that keeps the last would read different claims."""
    claims = json.dumps(es.claims())[:-1] + ', "sub": "admin"}'
    token = forge(header(es), claims.encode(), es.key.sign)
    assert refusal(es.validator(), token) == "malformed"
    raw_header = f'{{"alg":"ES256","kid":"{es.key.kid}","typ":"at+jwt","alg":"none"}}'
    signing_input = f"{b64url_encode(raw_header.encode())}.{b64url_encode(json.dumps(es.claims()).encode())}"
    token = f"{signing_input}.{b64url_encode(es.key.sign(signing_input.encode()))}"
    assert refusal(es.validator(), token) == "malformed"


def test_surrounding_json_whitespace_is_still_json(es: Kit) -> None:
    """Strict base64 and strict JSON, not an invented JSON: RFC 8259 allows this."""
    token = forge(header(es), b"  " + json.dumps(es.claims(), indent=2).encode() + b"\n", es.key.sign)
    assert es.validator().verify(token)["sub"] == "billing"


def test_a_token_over_8_kib_is_malformed_even_when_signed(es: Kit) -> None:
    validator = es.validator()
    fits = es.token(pad="x" * 5000)
    assert len(fits) < MAX_TOKEN_LENGTH and validator.verify(fits)["pad"]
    huge = es.token(pad="x" * 7000)
    assert len(huge) > MAX_TOKEN_LENGTH
    assert refusal(validator, huge) == "malformed"
    assert refusal(validator, huge.encode()) == "malformed"
    assert refusal(validator, "a" * 10_000_000) == "malformed"


def test_bytes_in_and_non_ascii_out(es: Kit) -> None:
    validator = es.validator()
    token = es.token()
    assert validator.verify(token.encode()) == validator.verify(bytearray(token.encode())) == es.claims()
    assert refusal(validator, token + "é") == "malformed"
    assert refusal(validator, token.encode() + "é".encode()) == "malformed"
    assert refusal(validator, "éé.éé.éé") == "malformed"
    assert refusal(validator, token.replace(token[5], "\u0410", 1)) == "malformed"  # Cyrillic A


def test_unicode_claims_inside_the_signed_payload_are_fine(es: Kit) -> None:
    assert es.validator().verify(es.token(name="Zoë 🚀"))["name"] == "Zoë 🚀"


@pytest.mark.parametrize("token", [
    "", ".", "..", "...", "a.b", "a.b.c.d", "a.b.c.d.e", "e30.e30.", "e30.e30.e30", "\x00", "🚀",
])
def test_shapes_that_are_not_compact_jws_are_malformed(es: Kit, token: str) -> None:
    assert refusal(es.validator(), token) == "malformed"


@pytest.mark.parametrize("value", [None, 42, 4.2, ["a.b.c"], {"t": 1}, object(), b"\xff.\xfe.\xfd"])
def test_non_token_inputs_are_malformed(es: Kit, value: Any) -> None:
    assert refusal(es.validator(), value) == "malformed"


def test_a_jwe_shaped_or_nested_token_is_malformed(es: Kit) -> None:
    inner = es.token()
    wrapped = forge({"alg": "ES256", "kid": es.key.kid, "typ": "at+jwt", "cty": "JWT"},
                    inner.encode(), es.key.sign)
    assert refusal(es.validator(), wrapped) == "malformed"  # payload is a JWS, not a JSON object
    assert refusal(es.validator(), inner + ".AAAA.AAAA") == "malformed"


# --- the shared token vectors (tests/vectors/tokens.json, for agents in any language) ---------

VECTORS = Path(__file__).parents[1] / "vectors"


def _vector_ids() -> list[str]:
    return [v["name"] for v in json.loads((VECTORS / "tokens.json").read_text())["vectors"]]


@pytest.mark.parametrize("name", _vector_ids())
def test_token_vectors(name: str) -> None:
    protocol = json.loads((VECTORS / "protocol.json").read_text())
    doc = json.loads((VECTORS / "tokens.json").read_text())
    vector = next(v for v in doc["vectors"] if v["name"] == name)
    agent = doc["agent"]
    anchor = TrustAnchor.from_jwk(protocol["anchor_jwk"])
    cache = KeyCache(agent["issuer"])
    cache.load_snapshot(anchor.open_snapshot(protocol["snapshot"]["jws"], issuer=agent["issuer"]))
    validator = Validator(cache, issuer=agent["issuer"], audience=agent["audience"],
                          leeway=agent["leeway"], clock=ManualClock(vector["now"]))
    if "reason" in vector:
        assert refusal(validator, vector["token"]) == vector["reason"]
    else:
        assert validator.verify(vector["token"]) == vector["claims"]

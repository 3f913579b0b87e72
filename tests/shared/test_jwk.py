"""Keys: RFC 7638 kids, one algorithm per key, no private material in repr or JWKs."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from keyherald.shared.jwk import ALGORITHMS, SigningKey, VerifyingKey, thumbprint

VECTORS = Path(__file__).parent.parent / "vectors"


def test_rfc7638_thumbprint_vector() -> None:
    vector = json.loads((VECTORS / "rfc7638.json").read_text())
    assert thumbprint(vector["jwk"]) == vector["thumbprint"]


def test_rfc7638_vector_imports_with_its_thumbprint_as_kid() -> None:
    vector = json.loads((VECTORS / "rfc7638.json").read_text())
    jwk = {k: v for k, v in vector["jwk"].items() if k != "kid"}
    assert VerifyingKey.from_jwk(jwk).kid == vector["thumbprint"]


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_sign_verify_and_jwk_round_trip(alg: str) -> None:
    key = SigningKey.generate(alg)  # type: ignore[arg-type]
    signature = key.sign(b"payload")
    imported = VerifyingKey.from_jwk(key.public.jwk)
    assert imported.kid == key.kid == thumbprint(key.public.jwk)
    assert imported.alg == alg
    assert imported.verify(b"payload", signature)
    assert not imported.verify(b"payload!", signature)
    assert not imported.verify(b"payload", signature[:-1] + bytes([signature[-1] ^ 1]))


def test_private_material_never_shows() -> None:
    key = SigningKey.generate("ES256")
    der = key.private_bytes()
    assert der.hex() not in repr(key) and der.hex() not in str(key)
    assert "d" not in key.public.jwk
    with pytest.raises(TypeError):
        pickle.dumps(key)


@pytest.mark.parametrize(
    "jwk, problem",
    [
        ({"kty": "oct", "k": "c2VjcmV0"}, "private"),
        ({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}, "coordinates"),
        ({"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}, "unsupported"),
        ({"kty": "OKP", "crv": "Ed25519", "x": "AA"}, "Ed25519"),
    ],
)
def test_bad_jwks_are_refused(jwk: dict[str, str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        VerifyingKey.from_jwk(jwk)


def test_rsa_keys_under_2048_bits_are_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from keyherald.shared.encoding import b64url_encode

    numbers = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key().public_numbers()
    jwk = {"kty": "RSA", "n": b64url_encode(numbers.n.to_bytes(128, "big")), "e": "AQAB"}
    with pytest.raises(ValueError, match="2048"):
        VerifyingKey.from_jwk(jwk)


def test_jwk_with_private_member_is_refused() -> None:
    jwk = dict(SigningKey.generate("EdDSA").public.jwk, d="AAAA")
    with pytest.raises(ValueError, match="private"):
        VerifyingKey.from_jwk(jwk)


def test_alg_that_does_not_fit_the_key_is_refused() -> None:
    jwk = dict(SigningKey.generate("ES256").public.jwk, alg="HS256")
    with pytest.raises(ValueError, match="does not fit"):
        VerifyingKey.from_jwk(jwk)


def test_kid_must_be_the_thumbprint() -> None:
    jwk = dict(SigningKey.generate("ES256").public.jwk, kid="chosen-by-attacker")
    with pytest.raises(ValueError, match="thumbprint"):
        VerifyingKey.from_jwk(jwk)


def test_small_rsa_keys_cannot_be_generated() -> None:
    with pytest.raises(ValueError, match="2048"):
        SigningKey.generate("RS256", rsa_bits=1024)

"""The signature algorithms: RFC vectors, interop with PyJWT, and no algorithm passing for another."""

from __future__ import annotations

from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from keyherald.shared.encoding import b64url_decode
from keyherald.shared.jwa import KeyAlgorithm, checker, signer
from keyherald.shared.jwk import SigningKey, VerifyingKey

# RFC 8037 appendix A.1 (the key) and A.4 (an Ed25519 JWS over it): Ed25519 is deterministic.
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_JWS = (
    "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc."
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
)
# RFC 7515 appendix A.3: an ES256 JWS and the public key that verifies it.
RFC7515_ES256_JWK = {
    "kty": "EC", "crv": "P-256",
    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
}
RFC7515_ES256_JWS = (
    "eyJhbGciOiJFUzI1NiJ9."
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ."
    "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"
)
ALL: tuple[KeyAlgorithm, ...] = ("ES256", "EdDSA", "RS256", "PS256")


def split(jws: str) -> tuple[bytes, bytes]:
    signing_input, _, signature = jws.rpartition(".")
    return signing_input.encode(), b64url_decode(signature)


def test_rfc8037_ed25519_vector_signs_and_verifies_byte_for_byte() -> None:
    private = ed25519.Ed25519PrivateKey.from_private_bytes(b64url_decode(RFC8037_D))
    data, signature = split(RFC8037_JWS)
    assert signer("EdDSA", private)(data) == signature
    public = VerifyingKey.from_jwk({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X})
    assert public.check(data, signature)
    assert not public.check(data + b" ", signature)


def test_rfc7515_es256_vector_verifies() -> None:
    key = VerifyingKey.from_jwk(RFC7515_ES256_JWK)
    data, signature = split(RFC7515_ES256_JWS)
    assert key.alg == "ES256" and key.check(data, signature)
    tampered = bytes([signature[0] ^ 1]) + signature[1:]
    assert not key.check(data, tampered)


@pytest.mark.parametrize("alg", ALL)
def test_every_algorithm_round_trips_and_refuses_a_changed_byte_or_length(alg: KeyAlgorithm) -> None:
    key = SigningKey.generate(alg)
    signature = key.sign(b"header.payload")
    assert key.public.check(b"header.payload", signature)
    assert not key.public.check(b"header.payloae", signature)
    assert not key.public.check(b"header.payload", signature[:-1] + bytes([signature[-1] ^ 0x80]))
    assert not key.public.check(b"header.payload", signature + b"\0")
    assert not key.public.check(b"header.payload", b"")


def test_es256_signatures_whose_halves_start_with_zero_bytes_verify() -> None:
    """r or s below 2^248 (1 in 256 signatures each) take the slow DER path: sign until both
    kinds appear, and each must verify."""
    key = SigningKey.generate("ES256")
    seen: set[str] = set()
    for i in range(4000):
        data = f"message {i}".encode()
        signature = key.sign(data)
        kinds = {"r" if signature[0] == 0 else "", "s" if signature[32] == 0 else ""} - {""}
        if kinds:
            assert key.public.check(data, signature)
            seen |= kinds
        if seen == {"r", "s"}:
            return
    pytest.fail("no signature with a leading zero byte in 4000 tries")


def test_ps256_and_rs256_with_one_rsa_key_are_not_interchangeable() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pss, pkcs1 = SigningKey("PS256", private), SigningKey("RS256", private)
    data = b"header.payload"
    assert pss.kid == pkcs1.kid  # RFC 7638 does not cover alg: the pinning side decides it
    assert not pss.public.check(data, pkcs1.sign(data))
    assert not pkcs1.public.check(data, pss.sign(data))


def test_ps256_interoperates_with_pyjwt_both_ways() -> None:
    key = SigningKey.generate("PS256", rsa_bits=3072)
    private: Any = key._key
    token = pyjwt.encode({"sub": "x"}, private, algorithm="PS256")
    assert key.public.check(*split(token))
    ours = key.sign(b"eyJhbGciOiJQUzI1NiJ9.eyJzdWIiOiJ4In0")
    mine = "eyJhbGciOiJQUzI1NiJ9.eyJzdWIiOiJ4In0." + pyjwt.utils.base64url_encode(ours).decode()
    assert pyjwt.decode(mine, key.public.public_key, algorithms=["PS256"]) == {"sub": "x"}


@pytest.mark.parametrize(
    ("alg", "make"),
    [
        ("ES256", lambda: ed25519.Ed25519PrivateKey.generate()),
        ("EdDSA", lambda: ec.generate_private_key(ec.SECP256R1())),
        ("PS256", lambda: ec.generate_private_key(ec.SECP256R1())),
        ("ES256", lambda: ec.generate_private_key(ec.SECP384R1())),
        ("HS256", lambda: ed25519.Ed25519PrivateKey.generate()),
    ],
)
def test_a_key_that_does_not_fit_its_algorithm_is_refused(alg: Any, make: Any) -> None:
    private = make()
    with pytest.raises(ValueError):
        SigningKey(alg, private)
    with pytest.raises(ValueError):
        checker(alg, private.public_key())

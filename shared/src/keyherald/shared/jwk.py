"""Signing keys and their public JWKs (RFC 7517/7518/8037), with RFC 7638 thumbprints.

One class per role: :class:`SigningKey` holds private material and never shows it;
:class:`VerifyingKey` is what travels. The algorithm belongs to the key: whoever verifies
takes it from here, never from a token's header.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal, TypeAlias

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from .encoding import b64url_decode, b64url_encode, dumps
from .jwa import KeyAlgorithm, PrivateKey, PublicKey, SignatureCheck, checker, signer

__all__ = [
    "ALGORITHMS",
    "CONTROL_ALGORITHMS",
    "Algorithm",
    "ControlAlgorithm",
    "KeyAlgorithm",
    "SigningKey",
    "VerifyingKey",
    "thumbprint",
    "token_algorithm",
]

Algorithm: TypeAlias = Literal["ES256", "EdDSA", "RS256"]
"""Algorithms that sign tokens."""
ALGORITHMS: tuple[Algorithm, ...] = ("ES256", "EdDSA", "RS256")
ControlAlgorithm: TypeAlias = Literal["PS256", "EdDSA"]
"""Algorithms of the control key, which signs events and snapshots (never tokens)."""
CONTROL_ALGORITHMS: tuple[ControlAlgorithm, ...] = ("PS256", "EdDSA")
MIN_RSA_BITS = 2048


def token_algorithm(alg: str) -> Algorithm:
    """``alg`` when tokens may be signed with it; ValueError for anything else (PS256 is the
    control key's, never a token's)."""
    for known in ALGORITHMS:
        if alg == known:
            return known
    raise ValueError(f"{alg!r} does not sign tokens")


def _int_b64(value: int, length: int | None = None) -> str:
    size = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return b64url_encode(value.to_bytes(size, "big"))


def _b64_int(text: Any) -> int:
    if not isinstance(text, str):
        raise ValueError("JWK member is not a string")
    return int.from_bytes(b64url_decode(text), "big")


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint, base64url: the kid of every keyherald key."""
    kty = jwk.get("kty")
    members = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x"), "RSA": ("e", "kty", "n")}
    if kty not in members:
        raise ValueError("unsupported JWK kty")
    try:
        required = {name: jwk[name] for name in members[kty]}
    except KeyError as missing:
        raise ValueError(f"JWK lacks {missing.args[0]!r}") from None
    return b64url_encode(hashlib.sha256(dumps(required)).digest())


class VerifyingKey:
    """A public key bound to one algorithm, ready to check signatures fast."""

    __slots__ = ("_key", "alg", "check", "jwk", "kid")

    def __init__(self, alg: KeyAlgorithm, key: PublicKey) -> None:
        if alg == "ES256":
            if not (isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)):
                raise ValueError("ES256 needs a P-256 key")
        elif alg == "EdDSA":
            if not isinstance(key, ed25519.Ed25519PublicKey):
                raise ValueError("EdDSA needs an Ed25519 key")
        elif alg in ("RS256", "PS256"):
            if not isinstance(key, rsa.RSAPublicKey) or key.key_size < MIN_RSA_BITS:
                raise ValueError(f"{alg} needs an RSA key of {MIN_RSA_BITS} bits or more")
        else:
            raise ValueError(f"algorithm {alg!r} is not allowed")
        self.alg: KeyAlgorithm = alg
        self._key = key
        self.check: SignatureCheck = checker(alg, key)
        """``check(signing_input, signature) -> bool``: what :meth:`verify` does, one call less."""
        self.jwk = self._to_jwk()
        self.kid = thumbprint(self.jwk)
        self.jwk["kid"] = self.kid

    def _to_jwk(self) -> dict[str, Any]:
        key = self._key
        jwk: dict[str, Any]
        if isinstance(key, ec.EllipticCurvePublicKey):
            nums = key.public_numbers()
            jwk = {"kty": "EC", "crv": "P-256", "x": _int_b64(nums.x, 32), "y": _int_b64(nums.y, 32)}
        elif isinstance(key, ed25519.Ed25519PublicKey):
            raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw)}
        else:
            rsa_nums = key.public_numbers()
            jwk = {"kty": "RSA", "n": _int_b64(rsa_nums.n), "e": _int_b64(rsa_nums.e)}
        jwk.update(alg=self.alg, use="sig")
        return jwk

    @classmethod
    def from_jwk(cls, jwk: Any) -> VerifyingKey:
        """Import a public JWK strictly; a JWK carrying private members is refused.

        An RSA JWK is RS256 unless its ``alg`` says PS256 (the thumbprint does not cover
        ``alg``: whoever pins an RSA key also decides its algorithm, as TrustAnchor does).
        """
        if not isinstance(jwk, dict):
            raise ValueError("JWK is not an object")
        if any(name in jwk for name in ("d", "p", "q", "dp", "dq", "qi", "k")):
            raise ValueError("JWK carries private key material")
        kty, alg = jwk.get("kty"), jwk.get("alg")
        key: PublicKey
        if kty == "EC" and jwk.get("crv") == "P-256":
            x, y = b64url_decode(jwk.get("x", "")), b64url_decode(jwk.get("y", ""))
            if len(x) != 32 or len(y) != 32:
                raise ValueError("bad P-256 coordinates")
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + x + y)
            expected: KeyAlgorithm = "ES256"
        elif kty == "OKP" and jwk.get("crv") == "Ed25519":
            x = b64url_decode(jwk.get("x", ""))
            if len(x) != 32:
                raise ValueError("bad Ed25519 key")
            key = ed25519.Ed25519PublicKey.from_public_bytes(x)
            expected = "EdDSA"
        elif kty == "RSA":
            key = rsa.RSAPublicNumbers(_b64_int(jwk.get("e")), _b64_int(jwk.get("n"))).public_key()
            expected = "PS256" if alg == "PS256" else "RS256"
        else:
            raise ValueError("unsupported JWK (need EC P-256, OKP Ed25519 or RSA)")
        if alg is not None and alg != expected:
            raise ValueError(f"JWK alg {alg!r} does not fit its key type")
        result = cls(expected, key)
        if "kid" in jwk and jwk["kid"] != result.kid:
            raise ValueError("JWK kid is not its RFC 7638 thumbprint")
        return result

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        """True when ``signature`` (JWS form) is valid for ``signing_input``."""
        return self.check(signing_input, signature)

    @property
    def public_key(self) -> PublicKey:
        return self._key

    def __repr__(self) -> str:
        return f"VerifyingKey(alg={self.alg!r}, kid={self.kid!r})"


class SigningKey:
    """A private signing key. Its material never shows in repr, str or errors."""

    __slots__ = ("_key", "_sign", "alg", "public")

    def __init__(self, alg: KeyAlgorithm, key: PrivateKey) -> None:
        self._key = key
        self.alg: KeyAlgorithm = alg
        self.public = VerifyingKey(alg, key.public_key())
        self._sign = signer(alg, key)

    @property
    def kid(self) -> str:
        return self.public.kid

    @classmethod
    def generate(cls, alg: KeyAlgorithm, *, rsa_bits: int = MIN_RSA_BITS) -> SigningKey:
        key: PrivateKey
        if alg == "ES256":
            key = ec.generate_private_key(ec.SECP256R1())
        elif alg == "EdDSA":
            key = ed25519.Ed25519PrivateKey.generate()
        elif alg in ("RS256", "PS256"):
            if rsa_bits < MIN_RSA_BITS:
                raise ValueError(f"RSA keys need {MIN_RSA_BITS} bits or more")
            key = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
        else:
            raise ValueError(f"algorithm {alg!r} is not supported")
        return cls(alg, key)

    def sign(self, signing_input: bytes) -> bytes:
        """The JWS-form signature of ``signing_input``."""
        return self._sign(signing_input)

    def private_bytes(self) -> bytes:
        """Unencrypted PKCS#8 DER: only for sealing under a KEK, never for storage as is."""
        return self._key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_private_bytes(cls, alg: KeyAlgorithm, data: bytes) -> SigningKey:
        """The inverse of :meth:`private_bytes`: a key we made, opened from its AES-GCM seal.

        The seal authenticates the bytes (under the KEK, bound to the kid), so OpenSSL's RSA
        consistency check, which guards against keys from untrusted sources, is skipped: it
        costs about 0.14 s for the RSA-3072 control key, on every ``keyherald`` command.
        """
        key = serialization.load_der_private_key(data, password=None, unsafe_skip_rsa_key_validation=True)
        if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey):
            raise ValueError("unsupported private key type")
        return cls(alg, key)

    def __repr__(self) -> str:
        return f"SigningKey(alg={self.alg!r}, kid={self.kid!r})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("SigningKey cannot be pickled")

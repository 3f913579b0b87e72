"""The signature algorithms (RFC 7518, RFC 8037): one signer and one checker per key.

Each checker is a closure bound to one public key and one algorithm, doing exactly one
cryptography call: agents run it on every event and every new token, so the dispatch on
the algorithm happens once, when the key is loaded, never per signature.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypeAlias

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

__all__ = ["KeyAlgorithm", "PrivateKey", "PublicKey", "SignatureCheck", "Signer", "checker", "signer"]

KeyAlgorithm: TypeAlias = Literal["ES256", "EdDSA", "RS256", "PS256"]
PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
PublicKey: TypeAlias = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey
SignatureCheck: TypeAlias = Callable[[bytes, bytes], bool]
"""``check(signing_input, signature) -> bool``, the signature in its JWS form."""
Signer: TypeAlias = Callable[[bytes], bytes]
"""``sign(signing_input) -> signature`` in its JWS form."""

_SHA256 = hashes.SHA256()
_ECDSA = ec.ECDSA(_SHA256)
_PKCS1 = padding.PKCS1v15()
_PSS = padding.PSS(padding.MGF1(_SHA256), 32)
"""RFC 7518 section 3.5: MGF1 with the same hash, a salt as long as the hash."""

# DER prefixes for r and s of 32 bytes without a leading zero byte (the case 255 times in
# 256), by their top bits: a set top bit needs a 0x00 pad to stay positive.
_DER_HEADS = tuple(
    (bytes((0x30, 68 + r_pad + s_pad, 2, 32 + r_pad)) + b"\0" * r_pad, bytes((2, 32 + s_pad)) + b"\0" * s_pad)
    for s_pad in (0, 1) for r_pad in (0, 1)
)


def _der(signature: bytes) -> bytes:
    """JWS ES256 signature (r || s, 32 bytes each) as the DER SEQUENCE OpenSSL wants."""
    r0, s0 = signature[0], signature[32]
    if r0 and s0:
        head, middle = _DER_HEADS[(r0 >> 7) | (s0 >> 7) << 1]
        return b"".join((head, signature[:32], middle, signature[32:]))
    r = signature[:32].lstrip(b"\0") or b"\0"
    s = signature[32:].lstrip(b"\0") or b"\0"
    if r[0] & 0x80:
        r = b"\0" + r
    if s[0] & 0x80:
        s = b"\0" + s
    lr, ls = len(r), len(s)
    return b"".join((bytes((0x30, lr + ls + 4, 2, lr)), r, bytes((2, ls)), s))


def checker(alg: KeyAlgorithm, public: PublicKey) -> SignatureCheck:
    """The check of ``alg`` signatures by ``public``; ValueError when the key does not fit."""
    if alg == "ES256" and isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, ec.SECP256R1):
        ec_verify = public.verify

        def check_es256(signing_input: bytes, signature: bytes) -> bool:
            if len(signature) != 64:
                return False
            try:
                ec_verify(_der(signature), signing_input, _ECDSA)
            except InvalidSignature:
                return False
            return True

        return check_es256
    if alg == "EdDSA" and isinstance(public, ed25519.Ed25519PublicKey):
        ed_verify = public.verify

        def check_eddsa(signing_input: bytes, signature: bytes) -> bool:
            if len(signature) != 64:
                return False
            try:
                ed_verify(signature, signing_input)
            except InvalidSignature:
                return False
            return True

        return check_eddsa
    if alg in ("RS256", "PS256") and isinstance(public, rsa.RSAPublicKey):
        rsa_verify, size = public.verify, (public.key_size + 7) // 8
        scheme = _PSS if alg == "PS256" else _PKCS1

        def check_rsa(signing_input: bytes, signature: bytes) -> bool:
            if len(signature) != size:
                return False
            try:
                rsa_verify(signature, signing_input, scheme, _SHA256)
            except InvalidSignature:
                return False
            return True

        return check_rsa
    raise ValueError(f"the key does not fit {alg}")


def signer(alg: KeyAlgorithm, private: PrivateKey) -> Signer:
    """Signing with ``alg`` by ``private``, giving the JWS form; ValueError when it does not fit."""
    if alg == "ES256" and isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(private.curve, ec.SECP256R1):
        ec_sign = private.sign

        def sign_es256(signing_input: bytes) -> bytes:
            r, s = decode_dss_signature(ec_sign(signing_input, _ECDSA))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")

        return sign_es256
    if alg == "EdDSA" and isinstance(private, ed25519.Ed25519PrivateKey):
        return private.sign
    if alg in ("RS256", "PS256") and isinstance(private, rsa.RSAPrivateKey):
        rsa_sign, scheme = private.sign, _PSS if alg == "PS256" else _PKCS1
        return lambda signing_input: rsa_sign(signing_input, scheme, _SHA256)
    raise ValueError(f"the key does not fit {alg}")

"""Strict, fast decoding of a token's parts and the per-key signature check.

Same strictness as :mod:`keyherald.shared.encoding` (the tests hold them equal on random
input), tuned for the request path: one ``translate`` plus a strict ``a2b_base64`` per part
instead of several passes, a JSON scanner built once instead of one per call, and the
ES256 signature turned into DER without going through Python integers.
"""

from __future__ import annotations

import binascii
import json
import json.scanner
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from keyherald.shared.encoding import no_constants, no_duplicate_members
from keyherald.shared.jwk import ALGORITHMS, VerifyingKey

from .errors import AlgorithmNotAllowed, MalformedToken

__all__ = [
    "ACCEPTED_TYP",
    "KEY_HEADERS",
    "SignatureCheck",
    "CANONICAL_LAST",
    "PAD",
    "TO_STD",
    "b64decode",
    "json_object",
    "json_scan",
    "parse_header",
    "signature_check",
]

SignatureCheck = Callable[[bytes, bytes], bool]
"""``check(signing_input, signature) -> bool``, bound to one public key and its algorithm."""

ACCEPTED_TYP = frozenset({"at+jwt", "application/at+jwt"})
"""RFC 9068 access tokens; media types compare case-insensitively (RFC 7515 section 4.1.9)."""

KEY_HEADERS = frozenset({"jwk", "jku", "x5u", "x5c"})
"""Headers through which a token would supply its own key: never honoured, always refused."""

_ALLOWED_ALGS = frozenset(ALGORITHMS)
_MAX_KID = 256

# base64url to standard alphabet; '+', '/' and '=' in the input become '!', which strict
# a2b_base64 rejects, so one pass both converts and refuses foreign characters.
TO_STD = bytes.maketrans(b"-_+/=", b"+/!!!")
PAD = (b"", b"!", b"==", b"=")
# Last character of a part whose length is 2 or 3 (mod 4): the bits beyond the data are zero.
CANONICAL_LAST = (b"", b"", b"AQgw", b"AEIMQUYcgkosw048")
_a2b = binascii.a2b_base64


def b64decode(part: bytes) -> bytes:
    """Decode one unpadded, canonical base64url part; ValueError for anything else."""
    tail = len(part) & 3
    if tail and part[-1] not in CANONICAL_LAST[tail]:
        raise ValueError("not canonical base64url")
    try:
        return _a2b(part.translate(TO_STD) + PAD[tail], strict_mode=True)
    except binascii.Error:
        raise ValueError("not canonical base64url") from None


_DECODER = json.JSONDecoder(object_pairs_hook=no_duplicate_members, parse_constant=no_constants)
json_scan = json.scanner.make_scanner(_DECODER)  # type: ignore[arg-type]  # the C scanner, built once


def json_object(data: bytes) -> tuple[dict[str, Any], str]:
    """Strict JSON object from UTF-8 bytes; also returns the text (to spot nesting cheaply)."""
    try:
        text = data.decode("utf-8")
        try:
            value, end = json_scan(text, 0)
        except StopIteration:
            end = -1
        if end != len(text):  # surrounding whitespace (legal JSON) or garbage: the slow path
            value = _DECODER.decode(text)
    except (ValueError, RecursionError):
        raise ValueError("not a JSON object") from None
    if type(value) is not dict:
        raise ValueError("not a JSON object")
    return value, text


def parse_header(part: bytes) -> tuple[str, str]:
    """Check a JOSE header and return (kid, alg); the key's own alg is compared later.

    A header that supplies a key (jwk, jku, x5u, x5c) is an attempt to choose the key and
    with it the algorithm: refused as ``algorithm_not_allowed``, like ``none`` and HMAC.
    ``crit`` names extensions we would have to understand; we understand none, so any
    ``crit`` makes the token ``malformed`` (RFC 7515 section 4.1.11).
    """
    try:
        header, _ = json_object(b64decode(part))
    except ValueError:
        raise MalformedToken("token header is not base64url JSON") from None
    if not KEY_HEADERS.isdisjoint(header):
        raise AlgorithmNotAllowed("token header tries to supply its own key")
    alg = header.get("alg")
    if type(alg) is not str:
        raise MalformedToken("token header has no alg")
    if alg not in _ALLOWED_ALGS:
        raise AlgorithmNotAllowed("token algorithm is not allowed")
    if "crit" in header:
        raise MalformedToken("token header has crit extensions")
    kid = header.get("kid")
    if type(kid) is not str or not 0 < len(kid) <= _MAX_KID:
        raise MalformedToken("token header has no kid")
    typ = header.get("typ")
    if type(typ) is not str or typ.lower() not in ACCEPTED_TYP:
        raise MalformedToken("token typ is not at+jwt")
    return kid, alg


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


def signature_check(key: VerifyingKey) -> SignatureCheck:
    """A closure doing exactly one cryptography call, with the algorithm fixed by ``key``."""
    public = key.public_key
    if key.alg == "ES256" and isinstance(public, ec.EllipticCurvePublicKey):
        ecdsa = ec.ECDSA(hashes.SHA256())
        ec_verify = public.verify

        def check_es256(signing_input: bytes, signature: bytes) -> bool:
            if len(signature) != 64:
                return False
            try:
                ec_verify(_der(signature), signing_input, ecdsa)
            except InvalidSignature:
                return False
            return True

        return check_es256
    if key.alg == "EdDSA" and isinstance(public, ed25519.Ed25519PublicKey):
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
    if key.alg == "RS256" and isinstance(public, rsa.RSAPublicKey):
        pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()
        rsa_verify, size = public.verify, (public.key_size + 7) // 8

        def check_rs256(signing_input: bytes, signature: bytes) -> bool:
            if len(signature) != size:
                return False
            try:
                rsa_verify(signature, signing_input, pkcs1, sha256)
            except InvalidSignature:
                return False
            return True

        return check_rs256
    raise ValueError("key does not fit its algorithm")  # VerifyingKey prevents this

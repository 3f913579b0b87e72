"""Compact JWS (RFC 7515), strict: exactly three canonical base64url parts, JSON headers.

Used for tokens (by the issuer's signer and the agent's validator) and for the control
envelopes of events and snapshots. Only the fixed algorithms of :mod:`.jwk` exist here.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .encoding import b64url_decode, b64url_encode, dumps, loads_object
from .jwk import SigningKey

__all__ = ["CompactJWS", "compact_header", "parse_compact", "sign_compact", "split_compact"]

MAX_COMPACT_LENGTH = 1 << 20


class CompactJWS(NamedTuple):
    header: dict[str, Any]
    payload: bytes
    signing_input: bytes
    signature: bytes


def sign_compact(header: dict[str, Any], payload: bytes, key: SigningKey) -> str:
    """Sign ``payload`` with ``key``; ``alg`` and ``kid`` come from the key, not the caller."""
    full = {**header, "alg": key.alg, "kid": key.kid}
    signing_input = f"{b64url_encode(dumps(full))}.{b64url_encode(payload)}"
    return f"{signing_input}.{b64url_encode(key.sign(signing_input.encode('ascii')))}"


def split_compact(text: str, *, max_length: int = MAX_COMPACT_LENGTH) -> tuple[bytes, bytes, bytes]:
    """The three parts of a compact JWS as ASCII bytes, not decoded; ValueError for anything
    else. The signing input is ``head + b"." + body``."""
    if not isinstance(text, str) or len(text) > max_length:
        raise ValueError("not a compact JWS")
    parts = text.encode("ascii").split(b".")  # UnicodeEncodeError is a ValueError
    if len(parts) != 3:
        raise ValueError("not a compact JWS")
    return parts[0], parts[1], parts[2]


def compact_header(text: str, *, max_length: int = MAX_COMPACT_LENGTH) -> bytes:
    """The header part of a compact JWS as ASCII bytes, not decoded, without copying the rest
    (a checkpoint can be 50 MB); ValueError unless it has the shape ``a.b.c``."""
    if not isinstance(text, str) or len(text) > max_length:
        raise ValueError("not a compact JWS")
    first = text.find(".")
    if first < 0 or text.find(".", first + 1) < 0:
        raise ValueError("not a compact JWS")
    return text[:first].encode("ascii")  # UnicodeEncodeError is a ValueError


def parse_compact(text: str, *, max_length: int = MAX_COMPACT_LENGTH) -> CompactJWS:
    """Split and decode without verifying. Raises ValueError on any malformation."""
    head, body, sig = split_compact(text, max_length=max_length)
    header = loads_object(b64url_decode(head))
    return CompactJWS(header, b64url_decode(body), b".".join((head, body)), b64url_decode(sig))

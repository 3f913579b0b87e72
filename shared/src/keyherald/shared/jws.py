"""Compact JWS (RFC 7515), strict: exactly three canonical base64url parts, JSON headers.

Used for tokens (by the issuer's signer and the agent's validator) and for the control
envelopes of events and snapshots. Only the fixed algorithms of :mod:`.jwk` exist here.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .encoding import b64url_decode, b64url_encode, dumps, loads_object
from .jwk import SigningKey

__all__ = ["CompactJWS", "parse_compact", "sign_compact"]

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


def parse_compact(text: str, *, max_length: int = MAX_COMPACT_LENGTH) -> CompactJWS:
    """Split and decode without verifying. Raises ValueError on any malformation."""
    if not isinstance(text, str) or len(text) > max_length:
        raise ValueError("not a compact JWS")
    parts = text.split(".")
    if len(parts) != 3:
        raise ValueError("not a compact JWS")
    header = loads_object(b64url_decode(parts[0]))
    payload = b64url_decode(parts[1])
    signature = b64url_decode(parts[2])
    signing_input = text[: len(parts[0]) + 1 + len(parts[1])].encode("ascii")
    return CompactJWS(header, payload, signing_input, signature)

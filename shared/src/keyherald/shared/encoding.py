"""Strict base64url and JSON: one canonical spelling is accepted, nothing else.

Lenient decoders let an attacker vary a token's bytes while keeping its meaning, which
breaks caches keyed by token and hides tampering; these refuse padding, whitespace,
foreign characters, non-canonical trailing bits, duplicate JSON keys and NaN/Infinity.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

__all__ = ["b64url_decode", "b64url_encode", "dumps", "loads_object", "no_constants", "no_duplicate_members"]

_B64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_TO_STD = bytes.maketrans(b"-_", b"+/")
_PAD = ("", "", "==", "=")


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url; raise ValueError for anything non-canonical."""
    raw = text.encode("ascii", "strict") if text.isascii() else None
    if raw is None or len(raw) % 4 == 1 or not _B64_ALPHABET.issuperset(raw):
        raise ValueError("not canonical base64url")
    try:
        data = binascii.a2b_base64(raw.translate(_TO_STD) + _PAD[len(raw) % 4].encode(), strict_mode=True)
    except binascii.Error:
        raise ValueError("not canonical base64url") from None
    # Trailing bits that the last character carries beyond the data must be zero.
    if len(raw) % 4 and b64url_encode(data) != text:
        raise ValueError("not canonical base64url")
    return data


def no_duplicate_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for json: an object naming a member twice is not one meaning."""
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate member name in JSON object")
    return result


def no_constants(name: str) -> Any:
    """``parse_constant`` for json: NaN and Infinity are not JSON (RFC 8259)."""
    raise ValueError(f"{name} is not JSON")


def loads_object(data: bytes | str) -> dict[str, Any]:
    """Parse strict JSON whose top level must be an object."""
    try:
        # Bytes are UTF-8 (RFC 8259 §8.1); json.loads would also guess UTF-16 and UTF-32.
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = json.loads(text, object_pairs_hook=no_duplicate_members, parse_constant=no_constants)
    except (ValueError, RecursionError, UnicodeDecodeError):
        raise ValueError("not valid JSON") from None
    if not isinstance(value, dict):
        raise ValueError("JSON value is not an object")
    return value


def dumps(value: Any) -> bytes:
    """Compact, key-sorted JSON (deterministic bytes for signing and thumbprints)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()

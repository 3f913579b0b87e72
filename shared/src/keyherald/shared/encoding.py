"""Strict base64url and JSON: one canonical spelling is accepted, nothing else.

Lenient decoders let an attacker vary a token's bytes while keeping its meaning, which
breaks caches keyed by token and hides tampering; these refuse padding, whitespace,
foreign characters, non-canonical trailing bits, duplicate JSON keys and NaN/Infinity.
"""

from __future__ import annotations

import base64
import binascii
import json
import json.scanner
from typing import Any

__all__ = [
    "B64_CANONICAL_LAST",
    "B64_PAD",
    "B64_TO_STD",
    "b64url_decode",
    "b64url_encode",
    "dumps",
    "loads_object",
    "no_constants",
    "no_duplicate_members",
    "scan_json",
]

# base64url to the standard alphabet; '+', '/' and '=' in the input become '!', which strict
# a2b_base64 refuses, so one pass both converts and refuses foreign characters.
B64_TO_STD = bytes.maketrans(b"-_+/=", b"+/!!!")
B64_PAD = (b"", b"!", b"==", b"=")
"""Padding for a part of length 0-3 (mod 4); a length of 1 can hold no byte: '!' refuses it."""
B64_CANONICAL_LAST = (b"", b"", b"AQgw", b"AEIMQUYcgkosw048")
"""Allowed last characters of a part of length 2 or 3 (mod 4): the bits beyond the data are 0."""
_a2b = binascii.a2b_base64


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str | bytes) -> bytes:
    """Decode unpadded, canonical base64url (str, or ASCII bytes); ValueError for anything else."""
    if isinstance(text, str):
        if not text.isascii():
            raise ValueError("not canonical base64url")
        text = text.encode("ascii")
    elif not isinstance(text, bytes):  # a JWK member that is a number, a list, an object...
        raise ValueError("not base64url text")
    tail = len(text) & 3
    if tail and text[-1] not in B64_CANONICAL_LAST[tail]:
        raise ValueError("not canonical base64url")
    try:
        return _a2b(text.translate(B64_TO_STD) + B64_PAD[tail], strict_mode=True)
    except binascii.Error:
        raise ValueError("not canonical base64url") from None


def no_duplicate_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for json: an object naming a member twice is not one meaning."""
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate member name in JSON object")
    return result


def no_constants(name: str) -> Any:
    """``parse_constant`` for json: NaN and Infinity are not JSON (RFC 8259)."""
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(object_pairs_hook=no_duplicate_members, parse_constant=no_constants)
scan_json = json.scanner.make_scanner(_DECODER)  # type: ignore[arg-type]
"""The strict C scanner, built once: ``scan_json(text, index) -> (value, end)``, raising
StopIteration when no value starts at ``index`` (the validator calls it on its hot path)."""


def loads_object(data: bytes | str) -> dict[str, Any]:
    """Parse strict JSON whose top level must be an object.

    Bytes are UTF-8 (RFC 8259 section 8.1; json.loads would also guess UTF-16 and UTF-32).
    The scanner is built once: json.loads with hooks builds a decoder on every call.
    """
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        try:
            value, end = scan_json(text, 0)
        except StopIteration:
            end = -1
        if end != len(text):  # surrounding whitespace (legal JSON) or garbage: the full decoder
            value = _DECODER.decode(text)
    except (ValueError, RecursionError):
        raise ValueError("not valid JSON") from None
    if type(value) is not dict:
        raise ValueError("JSON value is not an object")
    return value


def dumps(value: Any) -> bytes:
    """Compact, key-sorted JSON (deterministic bytes for signing and thumbprints)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()

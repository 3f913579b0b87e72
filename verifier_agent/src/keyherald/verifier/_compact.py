"""A token's header rules and its payload's JSON, tuned for the request path.

The strict decoding itself is :mod:`keyherald.shared.encoding` and the signature checks are
:mod:`keyherald.shared.jwa` (one implementation for the issuer, the envelopes and the
tokens); here is what only tokens need.
"""

from __future__ import annotations

from typing import Any

from keyherald.shared.encoding import b64url_decode, loads_object
from keyherald.shared.jwk import ALGORITHMS

from .errors import AlgorithmNotAllowed, MalformedToken

__all__ = [
    "ACCEPTED_TYP",
    "KEY_HEADERS",
    "json_object",
    "parse_header",
]


ACCEPTED_TYP = frozenset({"at+jwt", "application/at+jwt"})
"""RFC 9068 access tokens; media types compare case-insensitively (RFC 7515 section 4.1.9)."""

KEY_HEADERS = frozenset({"jwk", "jku", "x5u", "x5c"})
"""Headers through which a token would supply its own key: never honoured, always refused."""

_ALLOWED_ALGS = frozenset(ALGORITHMS)
_MAX_KID = 256


def json_object(data: bytes) -> tuple[dict[str, Any], str]:
    """Strict JSON object from UTF-8 bytes; also returns the text (to spot nesting cheaply)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not a JSON object") from None
    return loads_object(text), text


def parse_header(part: bytes) -> tuple[str, str]:
    """Check a JOSE header and return (kid, alg); the key's own alg is compared later.

    A header that supplies a key (jwk, jku, x5u, x5c) is an attempt to choose the key and
    with it the algorithm: refused as ``algorithm_not_allowed``, like ``none`` and HMAC.
    ``crit`` names extensions we would have to understand; we understand none, so any
    ``crit`` makes the token ``malformed`` (RFC 7515 section 4.1.11).
    """
    try:
        header = loads_object(b64url_decode(part))
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

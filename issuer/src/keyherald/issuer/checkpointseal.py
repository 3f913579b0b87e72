"""Sealing a large checkpoint in small steps, so that the issuer's event loop keeps running.

A million revocations make a 33 MB checkpoint. ``ControlKey.seal_snapshot`` builds it in a
few long C calls (a sort, ``json.dumps``, base64), each holding the GIL for up to a second:
even on a thread, appends would wait that long. :func:`seal_checkpoint` writes the very same
bytes in steps of a few milliseconds (chunks sorted and merged by end then jti, each chunk's
groups as JSON, base64 by slices), so the loop gets the GIL back between them. Small states
take the short road.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import secrets
from dataclasses import replace
from itertools import groupby, islice
from operator import itemgetter

from keyherald.shared.encoding import b64url_encode, dumps
from keyherald.shared.envelope import PROTOCOL_VERSION, SNAPSHOT_TYP, ControlKey
from keyherald.shared.revocations import RevokedTokens
from keyherald.shared.state import State

__all__ = ["STEP", "Sealed", "seal_checkpoint"]

STEP = 16_384
"""Revocations handled per C call: a few milliseconds each."""
_B64_SLICE = 3 << 20  # a multiple of 3: slices encode to the whole's base64, with no padding inside


class Sealed:
    """A checkpoint's compact JWS, with its length and SHA-1 (its CAS token) taken off the loop."""

    __slots__ = ("sha1", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha1 = hashlib.sha1(text.encode("ascii"), usedforsecurity=False).hexdigest()


def seal_checkpoint(control: ControlKey, state: State) -> Sealed:
    """``control.seal_snapshot(state.to_snapshot())``, byte for byte, in small steps (run it
    on a thread; ``state`` must not change meanwhile: give it a copy)."""
    tokens = state.revoked_tokens
    if not isinstance(tokens, RevokedTokens) or len(tokens) <= STEP:
        return Sealed(control.seal_snapshot(state.to_snapshot()))
    marker = f"kh-{secrets.token_hex(16)}"
    light = replace(state, revoked_tokens=RevokedTokens())
    document = light.to_snapshot().model_dump(mode="json")
    document["revoked_tokens"] = marker
    rest = dumps(document).decode("utf-8")
    slot = f'"revoked_tokens":"{marker}"'
    before, after = rest.split(slot)
    payload = "".join((before, '"revoked_tokens":[', _groups(tokens), "]", after)).encode("utf-8")
    header = {"typ": SNAPSHOT_TYP, "khv": PROTOCOL_VERSION, "jwk": control.signing_key.public.jwk}
    full = {**header, "alg": control.signing_key.alg, "kid": control.signing_key.kid}
    body = "".join(b64url_encode(payload[i:i + _B64_SLICE]) for i in range(0, len(payload), _B64_SLICE))
    signing_input = f"{b64url_encode(dumps(full))}.{body}"
    signature = control.signing_key.sign(signing_input.encode("ascii"))  # releases the GIL
    return Sealed(f"{signing_input}.{b64url_encode(signature)}")


def _groups(tokens: RevokedTokens) -> str:
    """The ``[end,[jti,...]]`` groups, comma-separated, as ``dumps(grouped(...))`` writes them:
    chunks sorted on their own by (end, jti), then merged (a Python loop the GIL leaves often).
    A group may span several steps: each step's jtis of the open group are appended to it."""
    items = iter(tokens.items())  # a copy nobody changes: safe to walk lazily
    runs = []
    while chunk := [(end, jti) for jti, end in islice(items, STEP)]:
        chunk.sort()
        runs.append(chunk)
    merged = heapq.merge(*runs)
    parts: list[str] = []
    current: int | None = None
    while block := list(islice(merged, STEP)):
        for end, run in groupby(block, key=itemgetter(0)):
            jtis = json.dumps([jti for _, jti in run], separators=(",", ":"), ensure_ascii=False)[1:-1]
            if end == current:
                parts.append(f",{jtis}")
            else:
                parts.append(f"{']],' if current is not None else ''}[{end},[{jtis}")
                current = end
    if current is not None:
        parts.append("]]")
    return "".join(parts)

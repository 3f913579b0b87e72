"""The signed state on disk, so that a service restarted during a Redis outage still validates.

The file holds what the issuer signed (a checkpoint JWS and the event JWSs applied after
it), never a derived state, plus the ids of the logs the agent left (which it must never
adopt again) and what it kept from them: revocations and key states a log it adopted lacks.
Booting from it opens every envelope again with the trust anchor and checks every link of
the chain, so a file altered by anyone without the control key is refused as a whole; the
kept part is applied on top and can only make the agent refuse more. With ``cache_path``
set the file is also the agent's floor at start-up: a log in Redis older than it is refused
(see :mod:`.bootstrap`).

Writes happen on a background task, at most about once a second, to a temporary file in
the same directory renamed over the old one (atomic on POSIX): a crash mid-write leaves the
previous file intact. Nothing here runs on the ``verify`` path.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from pydantic import ValidationError

from keyherald.shared.encoding import loads_object
from keyherald.shared.events import KeyRecord, SubjectRevocation
from keyherald.shared.files import replace_file
from keyherald.shared.revocations import RevokedTokens
from keyherald.shared.state import State

from .signedstate import Material, SignedState

__all__ = ["CacheFileError", "CacheWriter", "read_material", "write_material"]

log = logging.getLogger("keyherald.verifier")

FORMAT = "keyherald-agent-cache/3"
READABLE = (FORMAT, "keyherald-agent-cache/2")
WRITE_INTERVAL = 1.0


class CacheFileError(Exception):
    """The cache file is missing, unreadable, malformed or does not verify."""


def write_material(path: Path, material: Material) -> None:
    document = {
        "format": FORMAT, "snapshot": material.snapshot, "events": list(material.events), "left": list(material.left),
        "kept": _kept_document(material.kept),
    }
    replace_file(path, json.dumps(document, separators=(",", ":")).encode())

def read_material(path: Path) -> Material:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CacheFileError("no cache file") from None
    except OSError as exc:
        raise CacheFileError(f"cannot read the cache file ({type(exc).__name__})") from None
    try:
        document = loads_object(data)
    except ValueError:
        raise CacheFileError("the cache file is not valid JSON") from None
    snapshot, events, left = document.get("snapshot"), document.get("events"), document.get("left", [])
    if (
        document.get("format") not in READABLE
        or not isinstance(snapshot, str)
        or not isinstance(events, list)
        or not all(isinstance(e, str) for e in events)
        or not isinstance(left, list)
        or not all(isinstance(x, str) for x in left)
    ):
        raise CacheFileError("the cache file is not in the expected format")
    return Material(snapshot, tuple(events), tuple(left), _kept_state(document.get("kept")))


def _kept_document(kept: State | None) -> dict[str, object] | None:
    if kept is None:
        return None
    tokens = kept.revoked_tokens
    return {
        # A compact store holds hashes only this process can read: its entries are not written.
        "revoked_tokens": dict(tokens.items()) if isinstance(tokens, RevokedTokens) else {},
        "revoked_subjects": {sub: r.model_dump(mode="json") for sub, r in kept.revoked_subjects.items()},
        "keys": [k.model_dump(mode="json") for k in kept.keys.values()],
    }


def _kept_state(document: object) -> State | None:
    if document is None:
        return None
    try:
        if not isinstance(document, dict):
            raise TypeError
        tokens = document.get("revoked_tokens", {})
        if not isinstance(tokens, dict) or not all(isinstance(v, int) for v in tokens.values()):
            raise TypeError
        subjects = {
            str(s): SubjectRevocation.model_validate(r) for s, r in document.get("revoked_subjects", {}).items()
        }
        keys = [KeyRecord.model_validate(k) for k in document.get("keys", [])]
    except (TypeError, AttributeError, ValidationError):
        raise CacheFileError("the cache file's kept revocations are not in the expected format") from None
    return State(issuer="", revoked_tokens=RevokedTokens((str(j), e) for j, e in tokens.items()),
                 revoked_subjects=subjects,
                 keys={k.kid: k for k in keys})


class CacheWriter:
    """Writes the SignedState's material whenever it changed, at most once per interval."""

    def __init__(self, path: Path, signed: SignedState, *, interval: float = WRITE_INTERVAL) -> None:
        self._path = path
        self._signed = signed
        self._interval = interval
        self._written = -1

    async def run(self) -> None:
        while True:
            await self.flush()
            await asyncio.sleep(self._interval)

    async def flush(self) -> None:
        version, material = self._signed.version, self._signed.material
        if material is None or version == self._written:
            return
        try:
            await asyncio.to_thread(write_material, self._path, material)
        except OSError as exc:
            log.warning("cannot write the cache file %s (%s)", self._path, type(exc).__name__)
            return
        self._written = version

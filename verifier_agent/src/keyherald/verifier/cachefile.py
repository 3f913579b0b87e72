"""The signed state on disk, so that a service restarted during a Redis outage still validates.

The file holds only what the issuer signed (the last snapshot JWS and the event JWSs applied
after it), never a derived state: booting from it opens every envelope again with the trust
anchor, so a file altered by anyone without the control key is refused as a whole.

Writes happen on a background task, at most about once a second, to a temporary file in
the same directory renamed over the old one (atomic on POSIX): a crash mid-write leaves the
previous file intact. Nothing here runs on the ``verify`` path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path

from keyherald.shared.encoding import loads_object
from keyherald.shared.errors import ProtocolError
from keyherald.shared.state import Outcome

from .keycache import KeyCache
from .signedstate import Material, SignedState

__all__ = ["CacheFileError", "CacheWriter", "load_into", "read_material", "write_material"]

log = logging.getLogger("keyherald.verifier")

FORMAT = "keyherald-agent-cache/1"
WRITE_INTERVAL = 1.0


class CacheFileError(Exception):
    """The cache file is missing, unreadable, malformed or does not verify."""


def write_material(path: Path, material: Material) -> None:
    document = {"format": FORMAT, "snapshot": material.snapshot, "events": list(material.events)}
    data = json.dumps(document, separators=(",", ":")).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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
    snapshot, events = document.get("snapshot"), document.get("events")
    if (
        document.get("format") != FORMAT
        or not isinstance(snapshot, str)
        or not isinstance(events, list)
        or not all(isinstance(e, str) for e in events)
    ):
        raise CacheFileError("the cache file is not in the expected format")
    return Material(snapshot, tuple(events))


def load_into(signed: SignedState, material: Material) -> None:
    """Verify everything and load it; on any failure raise and leave ``signed`` untouched."""
    scratch = SignedState(KeyCache(signed.issuer), signed.anchor, issuer=signed.issuer)
    try:
        snapshot = scratch.open_snapshot(material.snapshot)
    except ProtocolError as exc:
        raise CacheFileError(f"the cache file's snapshot does not verify ({exc.code})") from None
    scratch.load(material.snapshot, snapshot)
    for text in material.events:
        if scratch.offer(text) is not Outcome.APPLIED:
            code = next(iter(scratch.refused), "out_of_sequence")
            raise CacheFileError(f"an event in the cache file does not verify ({code})")
    # Only now, with everything verified, touch the live state.
    signed.load(material.snapshot, snapshot)
    for text in material.events:
        signed.offer(text)


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

"""A writer's memory of the log, kept outside Redis: the furthest point it saw, and which
keys it saw revoked.

Redis is not trusted, and an issuer that believed whatever Redis holds could be rolled back:
restore an older (genuine) snapshot, and a restarted replica would build on it, its revoked
key active again. So every writer (replica or ``keyherald`` command) keeps a small record in
a local file: log id, seq, head digest and time of the furthest point it saw, the kids it saw
revoked (until they expire) and the logs it left. A writer refuses a log in Redis older than
its record, and never signs with a kid its record holds revoked.

The file is tagged with an HMAC under a key derived from the KEK, so a hand-edited record is
refused, not trusted; it holds nothing secret. Several processes may share one file (replicas
on one host, the command beside them): each write merges under an exclusive lock, keeping the
furthest point and the union of revoked kids.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import hmac
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from keyherald.shared.chain import Position
from keyherald.shared.encoding import dumps, loads_object
from keyherald.shared.lineage import Relation, relate

from .errors import IssuerError

__all__ = ["HighWater", "RecordFile", "RecordRefused", "newest_record", "records_here", "record_key"]

log = logging.getLogger("keyherald.issuer")

FORMAT = "keyherald-writer-record/1"
MAX_LEFT = 64
"""Logs remembered as left (never adopted again); the oldest go first."""


class RecordRefused(IssuerError):
    """The local record is unreadable or fails its integrity check."""

    code = "record_refused"


class HighWater(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    log: str
    seq: int = Field(ge=0)
    head: str
    time: float
    revoked_kids: dict[str, int] = Field(default_factory=dict)
    """kid -> the time after which no token it signed can be valid (then it may be forgotten)."""
    left: tuple[str, ...] = ()

    @property
    def position(self) -> Position:
        return Position(self.log, self.seq, self.head, self.time)

    def merged(self, other: HighWater) -> HighWater:
        """The furthest of two records' points, and everything both saw revoked or left."""
        relation = relate(self.position, other.position, left=self.left)
        newer = other if relation in (Relation.AHEAD, Relation.NEWER_LOG) else self
        kids = dict(self.revoked_kids)
        for kid, until in other.revoked_kids.items():
            kids[kid] = max(until, kids.get(kid, 0))
        left = [*self.left, *other.left, self.log, other.log]
        kept = [x for x in dict.fromkeys(left) if x != newer.log][-MAX_LEFT:]
        return newer.model_copy(update={"revoked_kids": kids, "left": tuple(kept)})

    def pruned(self, now: float) -> HighWater:
        return self.model_copy(update={"revoked_kids": {k: t for k, t in self.revoked_kids.items() if t > now}})


class RecordFile:
    """One record file: read, and merge-write under an exclusive lock (atomic rename)."""

    def __init__(self, path: Path, key: bytes) -> None:
        self.path = path
        self._key = key

    def __repr__(self) -> str:
        return f"RecordFile({str(self.path)!r})"

    def _tag(self, body: bytes) -> str:
        return hmac.new(self._key, body, hashlib.sha256).hexdigest()

    def read(self) -> HighWater | None:
        """The record, None when there is none yet; RecordRefused when it does not verify."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RecordRefused(f"cannot read the local record {self.path} ({exc.strerror})") from None
        try:
            doc = loads_object(data)
            body = dumps(doc["record"])
            tag = doc["mac"]
        except (ValueError, KeyError):
            raise RecordRefused(f"the local record {self.path} is not a record") from None
        if doc.get("format") != FORMAT or not isinstance(tag, str) or not hmac.compare_digest(self._tag(body), tag):
            raise RecordRefused(
                f"the local record {self.path} fails its integrity check (written with another KEK, or edited);"
                " move it away if you know why"
            )
        try:
            return HighWater.model_validate(doc["record"])
        except ValidationError:
            raise RecordRefused(f"the local record {self.path} is malformed") from None

    def merge(self, record: HighWater, *, now: float, durable: bool = True) -> HighWater:
        """Merge ``record`` into the file (furthest point wins); returns what the file now holds.
        ``durable`` also flushes it to the disk (survives a power cut, not only a crash)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            current = self.read()
            merged = (current.merged(record) if current is not None else record).pruned(now)
            if merged != current:
                self._write(merged, durable=durable)
            return merged

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _write(self, record: HighWater, *, durable: bool) -> None:
        body = record.model_dump(mode="json")
        data = dumps({"format": FORMAT, "record": body, "mac": self._tag(dumps(body))})
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                if durable:
                    os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def record_key(kek_derive: Callable[[str], bytes], namespace: str) -> bytes:
    """The HMAC key of a namespace's records, derived from the KEK."""
    return kek_derive(f"keyherald/{namespace}/writer-record")


def records_here(directory: Path | None, namespace: str, key: bytes) -> list[Path]:
    """This namespace's records in ``directory`` (one per control key) that verify, oldest first."""
    if directory is None:
        return []
    found = []
    for path in directory.glob(f"{glob.escape(namespace)}-*.json"):
        with contextlib.suppress(RecordRefused, OSError):
            if RecordFile(path, key).read() is not None:
                found.append((path.stat().st_mtime, path))
    return [path for _, path in sorted(found)]


def newest_record(directory: Path | None, namespace: str, key: bytes) -> HighWater | None:
    """Everything this host's records of ``namespace`` know, merged (the furthest point wins)."""
    merged: HighWater | None = None
    for path in records_here(directory, namespace, key):
        with contextlib.suppress(RecordRefused, OSError):
            record = RecordFile(path, key).read()
            if record is not None:
                merged = record if merged is None else merged.merged(record)
    return merged

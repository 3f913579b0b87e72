"""What makes the log one log: its id, and each event chained to the one before it.

Redis can hold genuine events of several histories: an older log kept in a backup, a copy
the issuer abandoned, events written on a rolled-back copy. A signature proves the issuer
wrote an event, not that it belongs after the one a reader holds. So every event names its
log (an id drawn at the log's start) and carries ``prev``, the digest of the previous
event's signed text; a reader applies event ``n + 1`` only when both match what it holds
after event ``n``. The first event's ``prev`` is the log's genesis digest.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass

__all__ = ["LOG_ID", "Position", "digest", "genesis_head", "new_log_id", "validate_log_id"]

LOG_ID = re.compile(r"[A-Za-z0-9_-]{22}")
"""A log id: 16 random bytes, base64url without padding."""


def new_log_id() -> str:
    return secrets.token_urlsafe(16)


def validate_log_id(value: str) -> str:
    if not isinstance(value, str) or not LOG_ID.fullmatch(value):
        raise ValueError("a log id is 22 base64url characters")
    return value


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def digest(text: str | bytes) -> str:
    """SHA-256 of an event's signed text (the compact JWS, as ASCII), base64url."""
    raw = text.encode("ascii") if isinstance(text, str) else text
    return _b64(hashlib.sha256(raw).digest())


def genesis_head(log: str) -> str:
    """The ``prev`` of a log's first event: bound to the log id, so no other log's start fits."""
    return _b64(hashlib.sha256(b"keyherald-log:" + log.encode("ascii")).digest())


@dataclass(frozen=True)
class Position:
    """Where a reader or writer stands: which log, after which event, and that event's time."""

    log: str
    seq: int
    head: str
    """Digest of event ``seq`` (the genesis digest before the first event)."""
    time: float
    """Issuer time of event ``seq``."""

    def __str__(self) -> str:
        return f"log {self.log[:8]} seq {self.seq}"

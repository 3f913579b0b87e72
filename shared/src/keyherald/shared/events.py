"""The events of the log and the snapshot: the contract between the issuer and every agent.

docs/protocol.md documents each field. Unknown fields are ignored and unknown event types
are skipped (their seq still counts), so an older agent can follow a newer issuer.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .jwk import Algorithm

__all__ = [
    "Event",
    "EventType",
    "HeartbeatData",
    "KeyEventData",
    "KeyExpiredData",
    "KeyRecord",
    "KeyState",
    "PolicyData",
    "Snapshot",
    "SubjectRevocation",
    "SubjectRevokedData",
    "TokenRevokedData",
]

REVOCATION_GRACE = 300
"""Seconds a revocation outlives the tokens it covers; an agent's leeway may not exceed it."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class EventType(StrEnum):
    KEY_PUBLISHED = "key.published"
    KEY_ACTIVATED = "key.activated"
    KEY_RETIRED = "key.retired"
    KEY_REVOKED = "key.revoked"
    KEY_EXPIRED = "key.expired"
    TOKEN_REVOKED = "token.revoked"
    SUBJECT_REVOKED = "subject.revoked"
    POLICY = "policy.updated"
    HEARTBEAT = "heartbeat"


class KeyState(StrEnum):
    PUBLISHED = "published"
    ACTIVE = "active"
    RETIRED = "retired"
    REVOKED = "revoked"


class KeyRecord(_Model):
    """A token-signing key as agents see it: public half, state and times (Unix seconds)."""

    kid: str
    alg: Algorithm
    jwk: dict[str, Any]
    state: KeyState
    published_at: int
    activates_at: int | None = None
    """When the issuer plans to activate it (published keys), or did (others)."""
    activated_at: int | None = None
    retired_at: int | None = None
    revoked_at: int | None = None
    expires_at: int | None = None
    """After this no token it signed can still be valid: the key is dropped."""

    def signed_window(self) -> tuple[int | None, int | None]:
        """(first, last) instant at which this key may have signed; None = open."""
        end = self.retired_at if self.retired_at is not None else self.revoked_at
        return self.activated_at, end


class KeyEventData(_Model):
    key: KeyRecord


class KeyExpiredData(_Model):
    kid: str


class TokenRevokedData(_Model):
    jti: str
    expires_at: int


class SubjectRevocation(_Model):
    revoked_at: int
    """Tokens of the subject issued at or before this second are refused."""
    expires_at: int


class SubjectRevokedData(_Model):
    sub: str
    revoked_at: int
    expires_at: int


class PolicyData(_Model):
    max_token_ttl: int = Field(gt=0)


class HeartbeatData(_Model):
    active_kid: str | None = None


class Event(_Model):
    """One entry of the log. ``seq`` is gap-free and starts at 1."""

    seq: int = Field(ge=1)
    type: str
    time: float
    issuer: str
    data: dict[str, Any] = Field(default_factory=dict)


class Snapshot(_Model):
    """The whole state after event ``seq``; the log goes on after stream id ``position``."""

    issuer: str
    seq: int = Field(ge=0)
    position: str
    time: float
    max_token_ttl: int = 0
    keys: list[KeyRecord] = Field(default_factory=list)
    revoked_tokens: dict[str, int] = Field(default_factory=dict)
    revoked_subjects: dict[str, SubjectRevocation] = Field(default_factory=dict)

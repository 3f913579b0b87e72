"""The events of the log and the snapshot: the contract between the issuer and every agent.

docs/protocol.md documents each field. Unknown fields are ignored and unknown event types
are skipped (their seq still counts), so an older agent can follow a newer issuer of the
same major protocol version. Every event names its log and chains to its predecessor
(:mod:`.chain`); a snapshot is a checkpoint: the state after event ``seq``, whose digest it
carries, with the events after it read from the stream.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .chain import validate_log_id
from .jwk import Algorithm
from .revocations import TokenGroups, read_groups

__all__ = [
    "AnchorLink",
    "ClientMark",
    "ClientUpdatedData",
    "Event",
    "EventType",
    "HeartbeatData",
    "KeyEventData",
    "KeyExpiredData",
    "KeyRecord",
    "KeyState",
    "LogLink",
    "LogStartedData",
    "PolicyData",
    "Snapshot",
    "SubjectRevocation",
    "SubjectRevokedData",
    "TokenRevokedData",
    "TokensRevokedData",
]

REVOCATION_GRACE = 300
"""Seconds a revocation outlives the tokens it covers; an agent's leeway may not exceed it."""
DEFAULT_HEARTBEAT = 5.0


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class EventType(StrEnum):
    KEY_PUBLISHED = "key.published"
    KEY_ACTIVATED = "key.activated"
    KEY_RETIRED = "key.retired"
    KEY_REVOKED = "key.revoked"
    KEY_EXPIRED = "key.expired"
    TOKEN_REVOKED = "token.revoked"
    TOKENS_REVOKED = "tokens.revoked"
    """Many tokens in one event (2.2): a bulk revocation, chunked to stay well under the limits."""
    SUBJECT_REVOKED = "subject.revoked"
    POLICY = "policy.updated"
    HEARTBEAT = "heartbeat"
    LOG_STARTED = "log.started"
    CLIENT_UPDATED = "client.updated"
    ANCHOR_ROTATED = "anchor.rotated"


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


class TokensRevokedData(_Model):
    tokens: dict[str, int] = Field(min_length=1)
    """jti -> its token's exp (Unix seconds)."""


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
    heartbeat_interval: float = Field(default=DEFAULT_HEARTBEAT, gt=0, le=3600)
    """The longest silence between two events: what readers measure freshness against."""


class LogLink(_Model):
    """A point of another log: the one a new log takes over from."""

    log: str
    seq: int = Field(ge=0)
    head: str
    time: float


class AnchorLink(_Model):
    """One rotation of the trust anchor (the data of ``anchor.rotated``): the key it replaces
    endorses the new one, and the new one signs the same words (keyherald.shared.anchorchain)."""

    previous: str
    """Thumbprint of the control key replaced."""
    previous_jwk: dict[str, Any]
    """Its public JWK, for readers pinned by thumbprint only."""
    jwk: dict[str, Any]
    """The new control key's public JWK."""
    at: float
    revoke_previous: bool = False
    """The replaced key is cut out: no chain leads through it (agents pinned to it must be re-pinned)."""
    endorsement: str
    """Compact JWS by the replaced key over the link's words."""
    cross: str
    """Compact JWS by the new key over the same words."""


class LogStartedData(_Model):
    previous: LogLink | None = None
    """The furthest point of the log this one replaces that its writer knew (None: genesis)."""
    reason: str = "genesis"
    """genesis, recovery (a writer repaired a lost or diverged log), restore or accepted."""


class ClientUpdatedData(_Model):
    client_id: str
    record: str | None
    """Digest of the client's stored record (None: deleted). A record in Redis whose digest is
    not this one is no client: an old record put back cannot bring an old secret back."""


class ClientMark(_Model):
    """What the log last said of a client: its record's digest ('' once deleted) and when.

    The time orders two logs' word on one client when a writer repairs a log: the later
    change wins, so a log put back from before a disable cannot enable the client again."""

    record: str
    at: float


class HeartbeatData(_Model):
    active_kid: str | None = None


class Event(_Model):
    """One entry of the log. ``seq`` is gap-free and starts at 1 in every log."""

    log: str
    seq: int = Field(ge=1)
    prev: str
    """Digest of event ``seq - 1`` of the same log (its genesis digest for seq 1)."""
    type: str
    time: float
    issuer: str
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("log")
    @classmethod
    def _log_id(cls, value: str) -> str:
        return validate_log_id(value)


class Snapshot(_Model):
    """A checkpoint: the whole state after event ``seq`` of log ``log``, whose digest is
    ``head``; the log goes on after stream id ``position``."""

    issuer: str
    log: str
    log_started: float
    previous: LogLink | None = None
    seq: int = Field(ge=0)
    """0 for the base of a new log: the state it starts from, before its first event."""
    head: str
    position: str
    time: float
    max_token_ttl: int = 0
    heartbeat_interval: float = DEFAULT_HEARTBEAT
    keys: list[KeyRecord] = Field(default_factory=list)
    revoked_tokens: TokenGroups = Field(default_factory=list)
    """``[[end, [jti, ...]], ...]`` (2.3); 2.2's object jti -> end is read too."""
    revoked_subjects: dict[str, SubjectRevocation] = Field(default_factory=dict)
    clients: dict[str, ClientMark] = Field(default_factory=dict)
    """client_id -> its current record's digest ('' once deleted) and the time of that change.
    The issuer's: agents carry it but never read it."""
    anchor: str = ""
    """Thumbprint of the control key since the last anchor rotation ('' before any)."""
    anchors: list[AnchorLink] = Field(default_factory=list)
    """The rotations that lead to it, oldest first (bounded): how an agent pinned to an earlier
    anchor reaches the key that signed this checkpoint."""

    @field_validator("log")
    @classmethod
    def _log_id(cls, value: str) -> str:
        return validate_log_id(value)

    @field_validator("revoked_tokens", mode="before")
    @classmethod
    def _groups(cls, value: object) -> TokenGroups:
        return read_groups(value)

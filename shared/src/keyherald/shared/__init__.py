"""keyherald.shared: the wire protocol both the issuer and the verifier agent speak."""

from __future__ import annotations

from .clock import Clock, ManualClock, system_clock
from .durations import Duration, format_duration, parse_duration
from .envelope import EVENT_TYP, SNAPSHOT_TYP, ControlKey, TrustAnchor
from .errors import (
    BadSignature,
    KeyheraldError,
    MalformedMessage,
    ProtocolError,
    SettingsError,
    UntrustedSigner,
    WrongIssuer,
)
from .events import (
    REVOCATION_GRACE,
    Event,
    EventType,
    KeyRecord,
    KeyState,
    Snapshot,
    SubjectRevocation,
)
from .jwk import ALGORITHMS, Algorithm, SigningKey, VerifyingKey, thumbprint
from .names import EVENT_FIELD, Names, stream_id
from .settings import BaseKeyheraldSettings, load_settings
from .state import Outcome, State

__all__ = [
    "ALGORITHMS",
    "EVENT_FIELD",
    "EVENT_TYP",
    "REVOCATION_GRACE",
    "SNAPSHOT_TYP",
    "Algorithm",
    "BadSignature",
    "BaseKeyheraldSettings",
    "Clock",
    "ControlKey",
    "Duration",
    "Event",
    "EventType",
    "KeyRecord",
    "KeyState",
    "KeyheraldError",
    "MalformedMessage",
    "ManualClock",
    "Names",
    "Outcome",
    "ProtocolError",
    "SettingsError",
    "SigningKey",
    "Snapshot",
    "State",
    "SubjectRevocation",
    "TrustAnchor",
    "UntrustedSigner",
    "VerifyingKey",
    "WrongIssuer",
    "format_duration",
    "load_settings",
    "parse_duration",
    "stream_id",
    "system_clock",
    "thumbprint",
]

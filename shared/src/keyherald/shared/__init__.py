"""keyherald.shared: the wire protocol both the issuer and the verifier agent speak.

Names load on first use (PEP 562): importing one module, ``keyherald.shared.errors`` say,
does not load the whole protocol, so the ``keyherald`` command starts fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_HOME = {
    "ALGORITHMS": ".jwk",
    "EVENT_FIELD": ".names",
    "EVENT_TYP": ".envelope",
    "REVOCATION_GRACE": ".events",
    "SNAPSHOT_TYP": ".envelope",
    "Algorithm": ".jwk",
    "BadSignature": ".errors",
    "BaseKeyheraldSettings": ".settings",
    "Clock": ".clock",
    "ControlKey": ".envelope",
    "Duration": ".durations",
    "Event": ".events",
    "EventType": ".events",
    "KeyRecord": ".events",
    "KeyState": ".events",
    "KeyheraldError": ".errors",
    "MalformedMessage": ".errors",
    "ManualClock": ".clock",
    "Names": ".names",
    "Outcome": ".state",
    "ProtocolError": ".errors",
    "SettingsError": ".errors",
    "SigningKey": ".jwk",
    "Snapshot": ".events",
    "State": ".state",
    "SubjectRevocation": ".events",
    "TrustAnchor": ".envelope",
    "UntrustedSigner": ".errors",
    "VerifyingKey": ".jwk",
    "WrongIssuer": ".errors",
    "format_duration": ".durations",
    "load_settings": ".settings",
    "parse_duration": ".durations",
    "stream_id": ".names",
    "system_clock": ".clock",
    "thumbprint": ".jwk",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

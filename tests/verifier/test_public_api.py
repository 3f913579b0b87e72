"""The names keyherald.verifier exports are a promise: changing them is a decision, not an accident."""

from __future__ import annotations

import keyherald.verifier as verifier
from keyherald.verifier import errors

EXPORTED = [
    "AgentStatus",
    "AlgorithmNotAllowed",
    "BootstrapError",
    "InvalidSignature",
    "InvalidToken",
    "KeyNotActive",
    "KeyRevoked",
    "KeyStatus",
    "LifetimeExceeded",
    "MalformedToken",
    "StaleState",
    "TokenClient",
    "TokenExpired",
    "TokenNotYetValid",
    "TokenRevoked",
    "TrustAnchor",
    "UnknownKey",
    "VerifierAgent",
    "VerifierError",
    "VerifierSettings",
    "WrongAudience",
    "WrongIssuer",
    "configure_logging",
]


def test_exported_names_are_pinned_and_sorted() -> None:
    assert verifier.__all__ == EXPORTED == sorted(EXPORTED)
    for name in EXPORTED:
        assert getattr(verifier, name) is not None


def test_every_refusal_is_an_invalid_token_with_a_stable_reason() -> None:
    reasons = {
        getattr(errors, name).reason
        for name in errors.__all__
        if isinstance(getattr(errors, name), type) and issubclass(getattr(errors, name), verifier.InvalidToken)
        and getattr(errors, name) is not verifier.InvalidToken
    }
    assert reasons >= {
        "malformed", "algorithm_not_allowed", "unknown_key", "bad_signature", "expired", "not_yet_valid",
        "wrong_issuer", "wrong_audience", "lifetime_exceeded", "revoked", "key_revoked", "stale",
    }
    for name in EXPORTED:
        obj = getattr(verifier, name)
        if isinstance(obj, type) and issubclass(obj, verifier.InvalidToken):
            assert obj.__name__ in errors.__all__


def test_the_light_package_imports_no_framework() -> None:
    import subprocess
    import sys

    code = (
        "import sys, keyherald.verifier, keyherald.verifier.testing;"
        "bad = [m for m in ('fastapi', 'starlette', 'faststream', 'httpx', 'keyherald.issuer') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

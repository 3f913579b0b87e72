"""Errors of the verifier agent.

    KeyheraldError (keyherald.shared)
    └── VerifierError
        ├── InvalidToken                 a token was refused; ``reason`` says why
        │   ├── MalformedToken           malformed
        │   ├── AlgorithmNotAllowed      algorithm_not_allowed
        │   ├── UnknownKey               unknown_key
        │   ├── InvalidSignature         bad_signature
        │   ├── TokenExpired             expired
        │   ├── TokenNotYetValid         not_yet_valid
        │   ├── WrongIssuer              wrong_issuer
        │   ├── WrongAudience            wrong_audience
        │   ├── LifetimeExceeded         lifetime_exceeded
        │   ├── TokenRevoked             revoked (the token, or its subject)
        │   ├── KeyRevoked               key_revoked
        │   ├── KeyNotActive             key_not_active (iat outside the key's signing window)
        │   └── StaleState               stale (fail-closed: no fresh word from the issuer)
        └── BootstrapError               the agent could not start (no Redis, no cache, wrong issuer)

The caller of an API learns only the RFC 6750 code (``invalid_token``); the service's
logs and metrics learn ``reason``. Messages never echo the token.
"""

from __future__ import annotations

from keyherald.shared.errors import KeyheraldError

__all__ = [
    "AlgorithmNotAllowed",
    "BootstrapError",
    "InvalidSignature",
    "InvalidToken",
    "KeyNotActive",
    "KeyRevoked",
    "LifetimeExceeded",
    "MalformedToken",
    "StaleState",
    "TokenExpired",
    "TokenNotYetValid",
    "TokenRevoked",
    "UnknownKey",
    "VerifierError",
    "WrongAudience",
    "WrongIssuer",
]


class VerifierError(KeyheraldError):
    code = "verifier_error"


class InvalidToken(VerifierError):
    """A token was refused. ``reason`` is a stable machine code for logs and metrics."""

    reason = "invalid_token"
    code = "invalid_token"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.reason.replace("_", " "))


class MalformedToken(InvalidToken):
    reason = "malformed"


class AlgorithmNotAllowed(InvalidToken):
    reason = "algorithm_not_allowed"


class UnknownKey(InvalidToken):
    reason = "unknown_key"


class InvalidSignature(InvalidToken):
    reason = "bad_signature"


class TokenExpired(InvalidToken):
    reason = "expired"


class TokenNotYetValid(InvalidToken):
    reason = "not_yet_valid"


class WrongIssuer(InvalidToken):
    reason = "wrong_issuer"


class WrongAudience(InvalidToken):
    reason = "wrong_audience"


class LifetimeExceeded(InvalidToken):
    reason = "lifetime_exceeded"


class TokenRevoked(InvalidToken):
    reason = "revoked"


class KeyRevoked(InvalidToken):
    reason = "key_revoked"


class KeyNotActive(InvalidToken):
    """The token claims an issue time at which its key was not signing (before its
    activation or after its retirement): what a key leaked after retirement would mint."""

    reason = "key_not_active"


class StaleState(InvalidToken):
    reason = "stale"


class BootstrapError(VerifierError):
    """The agent could not bootstrap: neither Redis nor a cache file, or another issuer's log."""

    code = "bootstrap_failed"

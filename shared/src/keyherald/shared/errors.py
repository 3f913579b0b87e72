"""Errors of the keyherald protocol, shared by the issuer and the agent.

    KeyheraldError
    ├── SettingsError            a setting is missing or malformed (names the setting)
    └── ProtocolError            something read from the transport is not acceptable
        ├── MalformedMessage     not a well-formed JWS / JSON / event at all
        ├── UntrustedSigner      signed by a key other than the pinned control key
        ├── BadSignature         the signature does not verify
        ├── WrongIssuer          a valid message from another issuer than expected
        ├── BrokenAnchorChain    an anchor rotation that does not verify, or no chain to a signer
        └── UnsupportedVersion   a protocol major version this code does not speak

Every error carries a short machine ``code``; messages never contain key material
or the raw message that failed.
"""

from __future__ import annotations

__all__ = [
    "BadSignature",
    "BrokenAnchorChain",
    "KeyheraldError",
    "MalformedMessage",
    "ProtocolError",
    "SettingsError",
    "UnsupportedVersion",
    "UntrustedSigner",
    "WrongIssuer",
]


class KeyheraldError(Exception):
    """Root of every error keyherald raises on purpose."""

    code = "keyherald_error"


class SettingsError(KeyheraldError, ValueError):
    """A setting is missing, malformed or does not work (wrong KEK, unreachable Redis)."""

    code = "bad_setting"

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        self.problem = problem
        super().__init__(f"{setting}: {problem}")


class ProtocolError(KeyheraldError):
    """Something read from Redis (an untrusted transport) was refused."""

    code = "protocol_error"


class MalformedMessage(ProtocolError):
    code = "malformed"


class UntrustedSigner(ProtocolError):
    code = "untrusted_signer"


class BadSignature(ProtocolError):
    code = "bad_signature"


class WrongIssuer(ProtocolError):
    code = "wrong_issuer"


class BrokenAnchorChain(ProtocolError):
    """An anchor rotation that does not verify, or no rotation chain from the pin to a signer."""

    code = "anchor_chain"


class UnsupportedVersion(ProtocolError):
    """The envelope speaks a protocol major version we do not know: never guess at it."""

    code = "unsupported_version"

"""Sealing and opening events and snapshots: the one implementation both sides use.

Redis is an untrusted transport. Every event and snapshot is a compact JWS signed with
the issuer's control key (Ed25519), a long-lived key apart from the token-signing keys.
Agents pin its public key, or its RFC 7638 thumbprint: the trust anchor.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .encoding import dumps, loads_object
from .errors import BadSignature, MalformedMessage, UntrustedSigner, WrongIssuer
from .events import Event, Snapshot
from .jwk import SigningKey, VerifyingKey
from .jws import parse_compact, sign_compact

__all__ = ["EVENT_TYP", "MAX_EVENT_LENGTH", "MAX_SNAPSHOT_LENGTH", "SNAPSHOT_TYP", "ControlKey", "TrustAnchor"]

EVENT_TYP = "keyherald-event+jws"
SNAPSHOT_TYP = "keyherald-snapshot+jws"
MAX_EVENT_LENGTH = 1 << 20
"""An event is small (a key record at most); anything longer is refused unread."""
MAX_SNAPSHOT_LENGTH = 64 << 20
"""A snapshot grows with live revocations (about 60 bytes each): 64 MiB holds a million."""
_M = TypeVar("_M", bound=BaseModel)
_THUMBPRINT = re.compile(r"[A-Za-z0-9_-]{43}")


class ControlKey:
    """The issuer's private control key: it signs every event and snapshot."""

    __slots__ = ("_key",)

    def __init__(self, key: SigningKey) -> None:
        if key.alg != "EdDSA":
            raise ValueError("the control key is an Ed25519 key")
        self._key = key

    @classmethod
    def generate(cls) -> ControlKey:
        return cls(SigningKey.generate("EdDSA"))

    @property
    def signing_key(self) -> SigningKey:
        return self._key

    @property
    def anchor(self) -> TrustAnchor:
        return TrustAnchor(self._key.kid, self._key.public)

    def seal_event(self, event: Event) -> str:
        return sign_compact({"typ": EVENT_TYP}, dumps(event.model_dump(mode="json")), self._key)

    def seal_snapshot(self, snapshot: Snapshot) -> str:
        # The public key rides along so that an agent pinned by thumbprint can bind it.
        header = {"typ": SNAPSHOT_TYP, "jwk": self._key.public.jwk}
        return sign_compact(header, dumps(snapshot.model_dump(mode="json")), self._key)

    def __repr__(self) -> str:
        return f"ControlKey(kid={self._key.kid!r})"


class TrustAnchor:
    """The pinned control key (or its thumbprint, bound on first snapshot) that opens envelopes."""

    __slots__ = ("key", "thumbprint")

    def __init__(self, thumbprint: str, key: VerifyingKey | None = None) -> None:
        if key is not None and key.kid != thumbprint:
            raise ValueError("trust anchor key does not match its thumbprint")
        if key is not None and key.alg != "EdDSA":
            raise ValueError("the trust anchor is an Ed25519 (OKP) key")
        self.thumbprint = thumbprint
        self.key = key

    @classmethod
    def from_jwk(cls, jwk: Any) -> TrustAnchor:
        key = VerifyingKey.from_jwk(jwk)
        return cls(key.kid, key)

    @classmethod
    def parse(cls, text: str) -> TrustAnchor:
        """A public JWK as JSON, a path to a file holding one, or an RFC 7638 thumbprint."""
        value = text.strip()
        if value.startswith("{"):
            try:
                return cls.from_jwk(json.loads(value))
            except json.JSONDecodeError:
                raise ValueError("trust anchor is not valid JSON") from None
        if _THUMBPRINT.fullmatch(value):
            return cls(value)
        try:
            content = Path(value).expanduser().read_text()
        except OSError:
            raise ValueError("trust anchor is neither a JWK, a readable file nor a thumbprint") from None
        if content.strip().startswith("{") or _THUMBPRINT.fullmatch(content.strip()):
            return cls.parse(content)
        raise ValueError("trust anchor file holds neither a JWK nor a thumbprint")

    def open_event(self, text: str, *, issuer: str | None = None) -> Event:
        if self.key is None:
            raise UntrustedSigner("the trust anchor has no key yet: open a snapshot first")
        event = self._open(text, EVENT_TYP, Event, self.key, MAX_EVENT_LENGTH)
        if issuer is not None and event.issuer != issuer:
            raise WrongIssuer(f"event from issuer {event.issuer!r}, expected {issuer!r}")
        return event

    def open_snapshot(self, text: str, *, issuer: str | None = None) -> Snapshot:
        key = self.key
        if key is None:
            header = self._header(text)
            try:
                key = VerifyingKey.from_jwk(header.get("jwk"))
            except ValueError as exc:
                raise MalformedMessage(f"snapshot carries no usable control key: {exc}") from None
            if key.kid != self.thumbprint:
                raise UntrustedSigner("snapshot signed by a control key other than the pinned one")
        snapshot = self._open(text, SNAPSHOT_TYP, Snapshot, key, MAX_SNAPSHOT_LENGTH)
        self.key = key
        if issuer is not None and snapshot.issuer != issuer:
            raise WrongIssuer(f"snapshot of issuer {snapshot.issuer!r}, expected {issuer!r}")
        return snapshot

    @staticmethod
    def _header(text: str) -> dict[str, Any]:
        try:
            return parse_compact(text, max_length=MAX_SNAPSHOT_LENGTH).header
        except ValueError:
            raise MalformedMessage("not a compact JWS") from None

    def _open(self, text: str, typ: str, model: type[_M], key: VerifyingKey, max_length: int) -> _M:
        try:
            jws = parse_compact(text, max_length=max_length)
        except (ValueError, TypeError):
            raise MalformedMessage("not a compact JWS") from None
        header = jws.header
        if header.get("alg") != "EdDSA" or "crit" in header:
            raise MalformedMessage("envelope header is not EdDSA without crit")
        if header.get("typ") != typ:
            raise MalformedMessage(f"envelope typ is not {typ}")
        if header.get("kid") != self.thumbprint:
            raise UntrustedSigner("signed by a control key other than the pinned one")
        if not key.verify(jws.signing_input, jws.signature):
            raise BadSignature("envelope signature does not verify")
        try:
            return model.model_validate(loads_object(jws.payload))
        except (ValueError, ValidationError):
            raise MalformedMessage("envelope payload is not a valid document") from None

    def __repr__(self) -> str:
        return f"TrustAnchor(thumbprint={self.thumbprint!r})"

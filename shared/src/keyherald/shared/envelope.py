"""Sealing and opening events and snapshots: the one implementation both sides use.

Redis is an untrusted transport. Every event and snapshot is a compact JWS signed with
the issuer's control key, a long-lived key apart from the token-signing keys. Agents pin
its public key, or its RFC 7638 thumbprint: the trust anchor.

The control key is RSA-3072 with PS256 by default, or Ed25519 (EdDSA). Every agent checks
every event, and an RSA signature with e = 65537 verifies about twice as fast as an Ed25519
one (signing is slower, but only the issuer signs, a few times a second at most). The
algorithm belongs to the anchor's key: an RSA anchor is PS256 whatever a header says.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .encoding import b64url_decode, dumps, loads_object
from .errors import BadSignature, MalformedMessage, UnsupportedVersion, UntrustedSigner, WrongIssuer
from .events import Event, Snapshot
from .jwk import CONTROL_ALGORITHMS, ControlAlgorithm, SigningKey, VerifyingKey
from .jws import compact_header, sign_compact, split_compact
from .revocations import read_groups

__all__ = [
    "EVENT_TYP",
    "MAX_EVENT_LENGTH",
    "MAX_SNAPSHOT_LENGTH",
    "CRIT",
    "MIN_CONTROL_RSA_BITS",
    "MUST_UNDERSTAND",
    "PROTOCOL_MAJOR",
    "PROTOCOL_VERSION",
    "SNAPSHOT_TYP",
    "ControlKey",
    "TrustAnchor",
    "check_version",
    "control_verifying_key",
]

PROTOCOL_VERSION = "2.3"
"""Carried in every envelope's header as ``khv``. A reader refuses a major version it does not
know; a minor one adds only what older readers may ignore, or refuse and so fail closed (a
2.2 agent cannot start from a 2.3 checkpoint: docs/protocol.md, Versions)."""
PROTOCOL_MAJOR = 2
_VERSION = re.compile(r"(\d{1,4})\.(\d{1,4})")
EVENT_TYP = "keyherald-event+jws"
SNAPSHOT_TYP = "keyherald-snapshot+jws"
MAX_EVENT_LENGTH = 1 << 20
"""An event is small (a key record at most); anything longer is refused unread."""
MAX_SNAPSHOT_LENGTH = 64 << 20
"""A snapshot grows with live revocations (about 32 bytes each for 22-character jtis, in
base64url): 64 MiB holds two million."""
MIN_CONTROL_RSA_BITS = 3072
"""The control key outlives many token keys: 128-bit strength (NIST SP 800-57), not 112."""
CRIT = ("khv",)
"""The one ``crit`` allowed (2.2): events an older reader must not skip carry it, and a 2.1
reader refuses any ``crit``: it misses the event and sees a gap, instead of following on
without it (it cannot resync from a 2.3 checkpoint either: it goes stale, fail-closed)."""
MUST_UNDERSTAND = frozenset({"tokens.revoked"})
_M = TypeVar("_M", bound=BaseModel)
_THUMBPRINT = re.compile(r"[A-Za-z0-9_-]{43}")
_MAX_HEADERS = 16


def _check_control(key: VerifyingKey) -> None:
    if key.alg not in CONTROL_ALGORITHMS:
        raise ValueError("a control key is RSA (PS256) or Ed25519 (EdDSA)")
    if key.alg == "PS256" and getattr(key.public_key, "key_size", 0) < MIN_CONTROL_RSA_BITS:
        raise ValueError(f"an RSA control key has {MIN_CONTROL_RSA_BITS} bits or more")


def control_verifying_key(jwk: Any) -> VerifyingKey:
    """A public control key from its JWK: RSA is always PS256, OKP Ed25519 is EdDSA."""
    if isinstance(jwk, dict) and jwk.get("kty") == "RSA":
        if jwk.get("alg", "PS256") != "PS256":
            raise ValueError("an RSA control key signs with PS256 only")
        jwk = {**jwk, "alg": "PS256"}
    key = VerifyingKey.from_jwk(jwk)
    _check_control(key)
    return key


def check_version(value: object) -> None:
    """Refuse an envelope of a major protocol version this code does not speak; one without
    ``khv`` is of version 1, whose logs carry no chain."""
    if value is None:
        raise UnsupportedVersion(
            f"unsupported protocol version 1 (this agent speaks {PROTOCOL_VERSION}): "
            "the log was written by an older issuer; upgrade or re-initialise it"
        )
    match = _VERSION.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise MalformedMessage("envelope header has a malformed khv")
    if int(match.group(1)) != PROTOCOL_MAJOR:
        raise UnsupportedVersion(
            f"unsupported protocol version {value} (this code speaks {PROTOCOL_VERSION}): "
            "upgrade keyherald to follow this log"
        )


def _snapshot(document: dict[str, Any]) -> Snapshot:
    """A checkpoint's document as a Snapshot. Its revoked tokens (a million, at scale) are
    checked by :func:`read_groups` in C-level passes rather than one validation per entry."""
    tokens = read_groups(document.pop("revoked_tokens", []))
    return Snapshot.model_validate(document).model_copy(update={"revoked_tokens": tokens})


class ControlKey:
    """The issuer's private control key: it signs every event and snapshot."""

    __slots__ = ("_key",)

    def __init__(self, key: SigningKey) -> None:
        _check_control(key.public)
        self._key = key

    @classmethod
    def generate(cls, alg: ControlAlgorithm = "PS256") -> ControlKey:
        if alg not in CONTROL_ALGORITHMS:
            raise ValueError(f"a control key signs with one of {', '.join(CONTROL_ALGORITHMS)}")
        return cls(SigningKey.generate(alg, rsa_bits=MIN_CONTROL_RSA_BITS))

    @property
    def alg(self) -> ControlAlgorithm:
        return "EdDSA" if self._key.alg == "EdDSA" else "PS256"

    @property
    def signing_key(self) -> SigningKey:
        return self._key

    @property
    def anchor(self) -> TrustAnchor:
        return TrustAnchor(self._key.kid, self._key.public)

    def seal_event(self, event: Event) -> str:
        header: dict[str, Any] = {"typ": EVENT_TYP, "khv": PROTOCOL_VERSION}
        if event.type in MUST_UNDERSTAND:
            header["crit"] = list(CRIT)
        return sign_compact(header, dumps(event.model_dump(mode="json")), self._key)

    def seal_snapshot(self, snapshot: Snapshot) -> str:
        # The public key rides along so that an agent pinned by thumbprint can bind it.
        header = {"typ": SNAPSHOT_TYP, "khv": PROTOCOL_VERSION, "jwk": self._key.public.jwk}
        return sign_compact(header, dumps(snapshot.model_dump(mode="json")), self._key)

    def __repr__(self) -> str:
        return f"ControlKey(kid={self._key.kid!r})"


class TrustAnchor:
    """The pinned control key (or its thumbprint, bound on first snapshot) that opens envelopes."""

    __slots__ = ("_headers", "key", "thumbprint")

    def __init__(self, thumbprint: str, key: VerifyingKey | None = None) -> None:
        if key is not None:
            if key.kid != thumbprint:
                raise ValueError("trust anchor key does not match its thumbprint")
            _check_control(key)
        self.thumbprint = thumbprint
        self.key = key
        self._headers: dict[bytes, str] = {}
        """Header parts of envelopes that opened with ``key`` -> their typ (checked once)."""

    @classmethod
    def from_jwk(cls, jwk: Any) -> TrustAnchor:
        key = control_verifying_key(jwk)
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
                key = control_verifying_key(header.get("jwk"))
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
            return loads_object(b64url_decode(compact_header(text, max_length=MAX_SNAPSHOT_LENGTH)))
        except ValueError:
            raise MalformedMessage("not a compact JWS") from None

    def _check_header(self, head: bytes, typ: str, key: VerifyingKey) -> UnsupportedVersion | None:
        """Raise for a header we must refuse; an unknown protocol version is returned, to be
        raised once the signature proves the issuer wrote it (so that junk cannot pose as a
        future log and stop an agent: it is only refused like any junk)."""
        try:
            header = loads_object(b64url_decode(head))
        except ValueError:
            raise MalformedMessage("not a compact JWS") from None
        try:
            check_version(header.get("khv"))
            unsupported = None
        except UnsupportedVersion as exc:
            unsupported = exc
        kid = header.get("kid")
        if type(kid) is not str or type(header.get("alg")) is not str:
            raise MalformedMessage("envelope header has no kid or alg")
        if kid != self.thumbprint:
            raise UntrustedSigner("signed by a control key other than the pinned one")
        crit = header.get("crit", CRIT)
        if header.get("alg") != key.alg or (crit != list(CRIT) and crit != CRIT):  # the algorithm is the key's
            raise MalformedMessage(f"envelope header is not {key.alg} without a crit other than khv")
        if header.get("typ") != typ and unsupported is None:
            raise MalformedMessage(f"envelope typ is not {typ}")
        return unsupported

    def _open(self, text: str, typ: str, model: type[_M], key: VerifyingKey, max_length: int) -> _M:
        """Verify, then parse. Every agent runs this on every event, so it stays lean: a
        header already opened with this key is not parsed again, and nothing is decoded
        twice."""
        try:
            head, body, sig = split_compact(text, max_length=max_length)
        except ValueError:
            raise MalformedMessage("not a compact JWS") from None
        known = key is self.key and self._headers.get(head) == typ
        unsupported = None if known else self._check_header(head, typ, key)
        try:
            payload, signature = b64url_decode(body), b64url_decode(sig)
        except ValueError:
            raise MalformedMessage("not a compact JWS") from None
        if not key.check(b".".join((head, body)), signature):
            raise BadSignature("envelope signature does not verify")
        if unsupported is not None:
            raise unsupported
        if not known and key is self.key:  # only headers the control key signed: bounded
            if len(self._headers) >= _MAX_HEADERS:
                self._headers.clear()
            self._headers[head] = typ
        try:
            document = loads_object(payload)
            if model is Snapshot:
                return _snapshot(document)  # type: ignore[return-value]
            return model.model_validate(document)
        except (ValueError, ValidationError):
            raise MalformedMessage("envelope payload is not a valid document") from None

    def __repr__(self) -> str:
        return f"TrustAnchor(thumbprint={self.thumbprint!r})"

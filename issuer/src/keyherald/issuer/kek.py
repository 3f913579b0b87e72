"""The key-encryption key: every private key is stored sealed under it (AES-256-GCM)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keyherald.shared.encoding import b64url_decode, b64url_encode, dumps, loads_object
from keyherald.shared.errors import SettingsError

from .errors import DamagedBlob
from .settings import IssuerSettings

__all__ = ["KeyEncryptionKey", "WrongKEK", "generate_kek_text"]


class WrongKEK(SettingsError):
    """The KEK does not open what is stored: another deployment's KEK, or a typo."""

    def __init__(self, what: str) -> None:
        super().__init__("KEYHERALD_KEK", f"does not decrypt {what} (wrong key-encryption key?)")


def generate_kek_text() -> str:
    return b64url_encode(secrets.token_bytes(32))


class KeyEncryptionKey:
    """Seals and opens private key material; the associated data binds a blob to its name."""

    __slots__ = ("_aead", "_key")

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise SettingsError("KEYHERALD_KEK", "must be 32 bytes, base64url-encoded")
        self._aead = AESGCM(key)
        self._key = key

    @classmethod
    def from_text(cls, text: str, *, setting: str = "KEYHERALD_KEK") -> KeyEncryptionKey:
        try:
            raw = b64url_decode(text.strip())
        except ValueError:
            raise SettingsError(setting, "is not base64url (use `keyherald kek` to make one)") from None
        if len(raw) != 32:
            raise SettingsError(setting, f"must decode to 32 bytes, not {len(raw)}")
        return cls(raw)

    @classmethod
    def from_settings(cls, settings: IssuerSettings) -> KeyEncryptionKey:
        if settings.kek is not None:
            return cls.from_text(settings.kek.get_secret_value())
        if settings.kek_file is not None:
            try:
                text = Path(settings.kek_file).read_text()
            except OSError as exc:
                raise SettingsError("KEYHERALD_KEK_FILE", f"cannot read it ({exc.strerror})") from None
            return cls.from_text(text, setting="KEYHERALD_KEK_FILE")
        raise SettingsError(
            "KEYHERALD_KEK", "is not set (and neither is KEYHERALD_KEK_FILE); `keyherald kek` makes one"
        )

    def seal(self, plaintext: bytes, *, name: str) -> str:
        nonce = os.urandom(12)
        ciphertext = self._aead.encrypt(nonce, plaintext, name.encode())
        return dumps({"v": 1, "nonce": b64url_encode(nonce), "ct": b64url_encode(ciphertext)}).decode()

    def open(self, blob: str | bytes, *, name: str) -> bytes:
        try:
            doc = loads_object(blob)
            nonce, ciphertext = b64url_decode(doc["nonce"]), b64url_decode(doc["ct"])
        except (ValueError, KeyError, TypeError, AttributeError):
            raise DamagedBlob(f"{name}: the stored blob is not one keyherald sealed (junk written over it?)") from None
        try:
            return self._aead.decrypt(nonce, ciphertext, name.encode())
        except InvalidTag:
            raise WrongKEK(name) from None

    def derive(self, label: str) -> bytes:
        """A 32-byte key for another purpose (HKDF-SHA256), independent of this one."""
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label.encode()).derive(self._key)

    def __repr__(self) -> str:
        return "KeyEncryptionKey(<hidden>)"

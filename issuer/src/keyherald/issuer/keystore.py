"""Private keys at rest in Redis, sealed under the KEK, readable by every replica."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from keyherald.shared.anchorchain import open_snapshot as open_chained
from keyherald.shared.encoding import dumps, loads_object
from keyherald.shared.envelope import ControlKey
from keyherald.shared.errors import ProtocolError, SettingsError
from keyherald.shared.jwk import ControlAlgorithm, SigningKey
from keyherald.shared.names import Names

from .controlfile import ControlKeyFile
from .errors import ControlKeyMismatch, DamagedBlob, KeyNotFound, NamespaceEmpty
from .kek import KeyEncryptionKey, WrongKEK

__all__ = ["KeyStore"]


class KeyStore:
    """Signing keys in a hash (kid -> sealed blob); the control key beside them."""

    def __init__(self, redis: Redis, names: Names, kek: KeyEncryptionKey) -> None:
        self._redis = redis
        self._names = names
        self._kek = kek
        self._cache: dict[str, SigningKey] = {}
        self._verified: dict[str, str] = {}
        """kid -> the blob last seen opening to it (not opened again each audit)."""

    def _seal(self, key: SigningKey, name: str) -> str:
        inner = dumps({"alg": key.alg, "kid": key.kid, "der": key.private_bytes().hex()})
        return self._kek.seal(inner, name=name)

    def _open(self, blob: Any, name: str) -> SigningKey:
        doc = loads_object(self._kek.open(blob, name=name))
        key = SigningKey.from_private_bytes(doc["alg"], bytes.fromhex(doc["der"]))
        return key

    def open_stored(self, blob: str, kid: str) -> SigningKey:
        """A signing key as the hash holds it (a backup's): DamagedBlob or WrongKEK when it does not open."""
        return self._open(blob, self._name(kid))

    def _name(self, kid: str) -> str:
        return f"{self._names.namespace}/signing-key/{kid}"

    def _field(self, key: SigningKey, made_at: float) -> str:
        """The hash field's value: the seal, and beside it when the key was made."""
        return dumps({**loads_object(self._seal(key, self._name(key.kid))), "made_at": int(made_at)}).decode()

    async def put(self, key: SigningKey, *, made_at: float) -> None:
        """Store before the key is announced: agents must never hold a key we cannot use.

        ``made_at`` (outside the seal) lets the leader sweep keys a lost append never announced.
        """
        blob = self._field(key, made_at)
        await self._redis.hset(self._names.signing_keys, key.kid, blob)
        self._cache[key.kid] = key

    async def made_at(self) -> dict[str, int]:
        """kid -> when each stored key was made (0 when unknown)."""
        made: dict[str, int] = {}
        for kid, blob in (await self._redis.hgetall(self._names.signing_keys)).items():
            try:
                value = loads_object(blob).get("made_at", 0)
            except ValueError:
                value = 0
            made[str(kid)] = value if isinstance(value, int) else 0
        return made

    async def get(self, kid: str) -> SigningKey:
        cached = self._cache.get(kid)
        if cached is not None:
            return cached
        blob = await self._redis.hget(self._names.signing_keys, kid)
        if blob is None:
            raise KeyNotFound(f"no private key stored for kid {kid}")
        key = self._open(blob, self._name(kid))
        if key.kid != kid:
            raise KeyNotFound(f"stored key for kid {kid} does not match it")
        self._cache[kid] = key
        return key

    async def delete(self, *kids: str) -> None:
        if kids:
            await self._redis.hdel(self._names.signing_keys, *kids)
            for kid in kids:
                self._cache.pop(kid, None)

    async def kids(self) -> set[str]:
        return {k.decode() if isinstance(k, bytes) else k for k in await self._redis.hkeys(self._names.signing_keys)}

    async def find_control(self, thumbprint: str) -> ControlKey | None:
        """The control key an anchor rotation introduced: in its slot, or still in the slot
        a rotation writes before it appends (a rotation interrupted between the two)."""
        for slot in (self._names.control_key, self._names.control_key_next):
            try:
                blob = await self._redis.get(slot)
                key = self.open_control(str(blob)) if blob is not None else None
            except (ResponseError, DamagedBlob, SettingsError):
                key = None
            if key is not None and key.anchor.thumbprint == thumbprint:
                return key
        return None

    def sealed_control(self, control: ControlKey) -> str:
        return self._seal(control.signing_key, self.control_name)

    def open_control(self, blob: str) -> ControlKey:
        """DamagedBlob for junk, WrongKEK for a blob sealed under another KEK."""
        return ControlKey(self._open(blob, self.control_name))

    async def restore(self, control: ControlKey) -> list[str]:
        """Put back what this process holds and Redis lost (a wipe, a failover that lost writes):
        the control key, and every signing key it loaded. Never overwrites. Returns the kids put back."""
        await self._redis.set(
            self._names.control_key, self._seal(control.signing_key, f"{self._names.namespace}/control-key"), nx=True
        )
        restored = []
        for kid, key in self._cache.items():
            if await self._redis.hsetnx(self._names.signing_keys, kid, self._field(key, 0)):
                restored.append(kid)
        return restored

    async def repair_fields(self, usable: Collection[str]) -> list[str]:
        """Write back each ``usable`` signing key this process holds whose field is gone or
        does not open to it (a Redis writer's HDEL or HSET); returns their kids. Keys no longer
        usable (expired, revoked: another writer deleted them on purpose) are forgotten here."""
        for kid in [k for k in self._cache if k not in usable]:
            del self._cache[kid]
            self._verified.pop(kid, None)
        kids = list(self._cache)
        if not kids:
            return []
        blobs = await self._redis.hmget(self._names.signing_keys, kids)
        fixed = []
        for kid, blob in zip(kids, blobs, strict=True):
            if blob is not None and self._verified.get(kid) == blob:
                continue
            try:
                ok = blob is not None and self._open(blob, self._name(kid)).kid == kid
            except (DamagedBlob, WrongKEK, ValueError, KeyError):
                ok = False
            if ok:
                self._verified[kid] = str(blob)
                continue
            await self._redis.hset(self._names.signing_keys, kid, self._field(self._cache[kid], 0))
            fixed.append(kid)
        return fixed

    async def control_key(
        self, *, create: bool = True, alg: ControlAlgorithm = "PS256", file: ControlKeyFile | None = None,
    ) -> ControlKey:
        """Load the control key. With ``file`` holding one, that one is the key (put back in
        Redis if Redis lost it, refused if Redis holds another); else Redis' (written to
        ``file`` when it has none yet). Without either, ``create`` makes one (SET NX: the
        first writer wins) or NamespaceEmpty says how to prepare the namespace."""
        name = self.control_name
        stored, damaged = await self._stored_control()
        kept = file.read() if file is not None else None
        if kept is not None:
            assert file is not None
            try:
                key = ControlKey(self._open(kept, name))
            except DamagedBlob:
                raise SettingsError(
                    "KEYHERALD_CONTROL_KEY_FILE", f"{file.path} does not hold a sealed control key"
                ) from None
            try:
                held = self._open_stored(stored, name) if stored is not None and not damaged else None
            except DamagedBlob:  # junk (WrongKEK stays a refusal: another deployment's key, never overwritten)
                held, damaged = None, True
            if held is None:
                await self._redis.set(self._names.control_key, kept, nx=not damaged)
            elif held.anchor.thumbprint != key.anchor.thumbprint and await self._rotated_from(held, key):
                # The checkpoint's chain leads from Redis' key to the file's: Redis holds a key the
                # anchor was rotated away from (put back by a Redis writer): the file's wins.
                await self._redis.set(self._names.control_key, kept)
            elif held.anchor.thumbprint != key.anchor.thumbprint:
                if not await self._rotated_from(key, held):
                    raise ControlKeyMismatch(
                        f"Redis holds another control key (anchor {held.anchor.thumbprint}) than {file.path}"
                        f" (anchor {key.anchor.thumbprint}), and no anchor rotation leads from the file's to it:"
                        " another deployment's namespace, or a wrong file"
                    )
                assert stored is not None
                file.replace(stored)  # rotated while this host was away: the file follows
                return held
            return key
        if stored is None:
            if not create:
                raise NamespaceEmpty(
                    f"namespace {self._names.namespace!r} has no control key: it was never prepared, or Redis lost"
                    " its data. Prepare it with `keyherald issuer init`, put it back with `keyherald restore FILE`,"
                    " or point KEYHERALD_CONTROL_KEY_FILE at the sealed control key (check KEYHERALD_NAMESPACE and"
                    " KEYHERALD_REDIS_URL first)"
                )
            fresh = ControlKey.generate(alg)
            await self._redis.set(self._names.control_key, self._seal(fresh.signing_key, name), nx=True)
            stored, damaged = await self._stored_control()
        if stored is None or damaged:
            raise DamagedBlob(
                f"the control key of namespace {self._names.namespace!r} in Redis is damaged (junk written over it):"
                " a running issuer replica writes it back; else set KEYHERALD_CONTROL_KEY_FILE, or restore a backup"
            )
        key = self._open_stored(stored, name)
        if file is not None:
            file.write(stored)
        return key

    async def _rotated_from(self, old: ControlKey, new: ControlKey) -> bool:
        """Does the log's checkpoint, signed by ``new``, carry a rotation chain from ``old``?"""
        try:
            text = await self._redis.get(self._names.snapshot)
            if text is None:
                return False
            _, signer = open_chained(old.anchor, str(text))
        except (ProtocolError, ResponseError):
            return False
        return signer.thumbprint == new.anchor.thumbprint

    @property
    def control_name(self) -> str:
        return f"{self._names.namespace}/control-key"

    def _open_stored(self, blob: str, name: str) -> ControlKey:
        try:
            return ControlKey(self._open(blob, name))
        except DamagedBlob:
            raise DamagedBlob(
                f"the control key of namespace {self._names.namespace!r} in Redis is damaged (junk written over it):"
                " a running issuer replica writes it back; else set KEYHERALD_CONTROL_KEY_FILE, or restore a backup"
            ) from None

    async def _stored_control(self) -> tuple[str | None, bool]:
        """Redis' control key blob, and whether what is there is damaged (not a string)."""
        try:
            blob = await self._redis.get(self._names.control_key)
        except ResponseError:
            return None, True  # WRONGTYPE: someone made it a list, a hash...
        return (None if blob is None else str(blob)), False

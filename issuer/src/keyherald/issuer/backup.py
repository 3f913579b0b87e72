"""A namespace in one file, and back: for a Redis that lost its data.

The file holds what Redis holds, sealed as Redis holds it: the control key and the signing
keys (AES-GCM under the KEK), the client records (HMAC-tagged, bound by the log's digests)
and the log itself (the checkpoint and the events after it, each signed by the control key).
Nothing in it is usable without the KEK, and nothing in it can be altered unnoticed: the
whole file carries an HMAC under a key derived from the KEK (so a truncated log or an edited
head is refused, not just a forged event), and a restore opens every seal and verifies the log
before it writes anything. A backup older than what this host's writer record knows, or of
another anchor than the control key file holds, is refused unless the operator says so.

A backup is read in one MULTI, so it is consistent against a live issuer. A restore puts the
keys and clients back on an empty namespace and starts a new log from the backup's state:
agents that followed the old log adopt it as a newer log and keep every revocation they
hold (the state never rolls back); fresh agents start from the backup's state.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis

from keyherald.shared.chain import digest
from keyherald.shared.clock import Clock, system_clock
from keyherald.shared.connect import close_client
from keyherald.shared.envelope import TrustAnchor
from keyherald.shared.errors import ProtocolError
from keyherald.shared.events import Event, LogLink
from keyherald.shared.lineage import Relation, relate
from keyherald.shared.names import Names
from keyherald.shared.state import Outcome, State

from .clients import record_digest
from .context import IssuerContext, connect_redis
from .controlfile import ControlKeyFile
from .errors import BackupRefused, DamagedBlob, KeyNotFound
from .highwater import HighWater, newest_record, record_key
from .kek import KeyEncryptionKey, WrongKEK
from .keystore import KeyStore
from .logreader import format_head
from .rotation import Rotator
from .settings import IssuerSettings

__all__ = ["FORMAT", "Backup", "mac_key", "restore_backup", "take_backup"]

FORMAT = "keyherald-backup/2"
ATTEMPTS = 5


@dataclass(frozen=True)
class Backup:
    namespace: str
    issuer: str
    anchor: str
    """The control key's thumbprint (the trust anchor agents pin)."""
    taken_at: float
    control_key: str
    checkpoint: str
    head: str
    events: list[str] = field(default_factory=list)
    signing_keys: dict[str, str] = field(default_factory=dict)
    clients: dict[str, str] = field(default_factory=dict)
    mac: str = ""
    """HMAC-SHA256 of every other field, under a key derived from the KEK (see :func:`mac_key`)."""

    def _body(self) -> bytes:
        fields = {k: v for k, v in asdict(self).items() if k != "mac"}
        return json.dumps({"format": FORMAT, **fields}, sort_keys=True, separators=(",", ":")).encode()

    def tagged(self, key: bytes) -> Backup:
        tag = base64.urlsafe_b64encode(hmac.new(key, self._body(), hashlib.sha256).digest()).decode()
        return Backup(**{**asdict(self), "mac": tag})

    def check(self, key: bytes) -> None:
        """BackupRefused unless the file is as written: nothing edited, added or cut off."""
        expected = self.tagged(key).mac
        if not hmac.compare_digest(expected.encode(), self.mac.encode()):
            raise BackupRefused("the backup was altered since it was written (its integrity tag does not match)")

    def to_bytes(self) -> bytes:
        return json.dumps({"format": FORMAT, **asdict(self)}, indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes) -> Backup:
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise BackupRefused("not a keyherald backup (not JSON)") from None
        if not isinstance(doc, dict) or doc.pop("format", None) != FORMAT:
            raise BackupRefused(f"not a keyherald backup (format {FORMAT} expected)")
        try:
            backup = cls(**doc)
        except TypeError:
            raise BackupRefused("the backup's fields are not the expected ones") from None
        strings = [backup.namespace, backup.issuer, backup.anchor, backup.control_key, backup.checkpoint, backup.head,
                   backup.mac]
        maps = [backup.signing_keys, backup.clients]
        if not all(isinstance(s, str) for s in strings) or not isinstance(backup.events, list) \
                or not all(isinstance(e, str) for e in backup.events) \
                or not all(isinstance(m, dict) and all(isinstance(v, str) for v in m.values()) for m in maps):
            raise BackupRefused("the backup's fields are not of the expected types")
        return backup

    def state(self, anchor: TrustAnchor) -> State:
        """The log the backup holds, verified: checkpoint, then every event up to the head."""
        try:
            snapshot = anchor.open_snapshot(self.checkpoint, issuer=self.issuer)
            state = State.from_snapshot(snapshot)
            for text in self.events:
                event: Event = anchor.open_event(text, issuer=self.issuer)
                if state.apply(event, digest(text)) is not Outcome.APPLIED:
                    raise BackupRefused(f"event {event.seq} of the backup does not extend its log")
        except ProtocolError as exc:
            raise BackupRefused(f"the backup's log does not verify with its control key ({exc.code})") from None
        if format_head(state) != self.head:
            raise BackupRefused("the backup's log does not reach its head")
        return state


async def take_backup(ctx: IssuerContext) -> Backup:
    """Everything of the namespace, read at one instant and verified."""
    names = ctx.names
    for _ in range(ATTEMPTS):
        async with ctx.redis.pipeline(transaction=True) as pipe:
            pipe.get(names.control_key)
            pipe.get(names.snapshot)
            pipe.get(names.head)
            pipe.xrange(names.events)
            pipe.hgetall(names.signing_keys)
            pipe.hgetall(names.clients)
            control, checkpoint, head, entries, keys, clients = await pipe.execute()
        if control is None or checkpoint is None or head is None:
            raise BackupRefused("the namespace holds no whole log to back up (see `keyherald log status`)")
        held = ctx.keystore.open_control(str(control))
        if held.anchor.thumbprint != ctx.control.anchor.thumbprint:
            continue  # rotated while we read: read again
        snapshot_seq = ctx.control.anchor.open_snapshot(str(checkpoint), issuer=None).seq
        events = [fields.get("event", "") for entry_id, fields in entries if int(entry_id.split("-")[0]) > snapshot_seq]
        backup = Backup(
            namespace=names.namespace, issuer=ctx.settings.issuer, anchor=held.anchor.thumbprint,
            taken_at=time.time(), control_key=str(control), checkpoint=str(checkpoint), head=str(head),
            events=[str(e) for e in events], signing_keys={str(k): str(v) for k, v in keys.items()},
            clients={str(k): str(v) for k, v in clients.items()},
        )
        state = backup.state(held.anchor)
        bound = {c: r for c, r in backup.clients.items() if state.client_record(c) == record_digest(r)}
        kek = KeyEncryptionKey.from_settings(ctx.settings)
        return Backup(**{**asdict(backup), "clients": bound}).tagged(mac_key(kek, names.namespace))
    raise BackupRefused("the namespace kept changing while it was read; try again")


def mac_key(kek: KeyEncryptionKey, namespace: str) -> bytes:
    return kek.derive(f"keyherald/{namespace}/backup")


async def restore_backup(settings: IssuerSettings, backup: Backup, *, older: bool = False,
                         clock: Clock = system_clock) -> State:
    """Put ``backup`` back on an empty namespace and start a new log from it. ``older``: this
    host's record knows a later point, and the operator accepts losing what came after the
    backup (keys the record saw revoked are revoked again)."""
    if backup.namespace != settings.namespace:
        raise BackupRefused(
            f"the backup is of namespace {backup.namespace!r}, not {settings.namespace!r} (set KEYHERALD_NAMESPACE)"
        )
    if backup.issuer != settings.issuer:
        raise BackupRefused(
            f"the backup is of issuer {backup.issuer!r}, not {settings.issuer!r} (set KEYHERALD_ISSUER)"
        )
    kek = KeyEncryptionKey.from_settings(settings)
    redis = await connect_redis(settings.redis_url)
    try:
        names = Names(settings.namespace)
        store = KeyStore(redis, names, kek)
        control = store.open_control(backup.control_key)  # the KEK opens it, or WrongKEK
        backup.check(mac_key(kek, names.namespace))
        if control.anchor.thumbprint != backup.anchor:
            raise BackupRefused("the backup's control key is not the anchor it names")
        state = backup.state(control.anchor)
        _check_keys(store, backup)
        _check_control_file(settings, store, backup)
        record = newest_record(settings.state_dir, names.namespace, record_key(kek.derive, names.namespace))
        _check_record(record, state, older=older)
        await _require_empty(redis, names, store, control.anchor.thumbprint)
        await redis.set(names.control_key, backup.control_key, nx=True)
        for key, values in ((names.signing_keys, backup.signing_keys), (names.clients, backup.clients)):
            mapping: dict[Any, Any] = dict(values)
            if mapping:
                await redis.hset(key, mapping=mapping)
    finally:
        await close_client(redis)
    async with IssuerContext(settings, create=False, clock=clock) as ctx:
        previous = LogLink(log=state.log, seq=state.seq, head=state.head, time=state.time)
        if record is not None and older:  # as `log accept` does: the new log follows the furthest point
            previous = LogLink(log=record.log, seq=record.seq, head=record.head, time=record.time)
            state.time = max(state.time, record.time)
        await ctx.log.start_new_log(state, reason="restore", previous=previous)
        rotator = Rotator(ctx)
        for _ in range(16):  # keys the record saw revoked, and keys whose private half is gone: one commit each
            if not await rotator.tick():
                break
        return await ctx.log.sync()


def _check_keys(store: KeyStore, backup: Backup) -> None:
    for kid, blob in backup.signing_keys.items():
        try:
            if store.open_stored(blob, kid).kid != kid:
                raise KeyNotFound(kid)
        except (DamagedBlob, KeyNotFound, WrongKEK, ValueError, KeyError):
            raise BackupRefused(f"the backup's signing key {kid} does not open as that key") from None


def _check_control_file(settings: IssuerSettings, store: KeyStore, backup: Backup) -> None:
    """The key file holds the anchor the deployment runs on: a backup of another (one rotated
    away from, perhaps revoked as leaked) is not brought back."""
    if settings.control_key_file is None:
        return
    kept = ControlKeyFile(settings.control_key_file).read()
    if kept is not None and store.open_control(kept).anchor.thumbprint != backup.anchor:
        raise BackupRefused(
            f"the control key file {settings.control_key_file} holds another anchor than the backup's"
            f" ({backup.anchor}): a backup from before an anchor rotation would bring back the old anchor;"
            " restore a backup taken since"
        )


def _check_record(record: HighWater | None, state: State, *, older: bool) -> None:
    if record is None:
        return
    relation = relate(record.position, state.position, previous=state.previous, left=record.left)
    if relation in (Relation.SAME, Relation.AHEAD, Relation.NEWER_LOG) or older:
        return
    raise BackupRefused(
        f"this host's record knows log {record.log} at seq {record.seq}, further than the backup ({state.log}"
        f" at seq {state.seq}): restoring it loses every revocation made after it for agents that start from"
        " now on. Restore a newer backup, or, if this is the newest there is, run again with --older"
        " (keys the record saw revoked are revoked again)"
    )


async def _require_empty(redis: Redis, names: Names, store: KeyStore, anchor: str) -> None:
    held = await redis.get(names.control_key)
    if held is not None and store.open_control(str(held)).anchor.thumbprint != anchor:
        raise BackupRefused("the namespace holds another control key: it is not the one this backup is of")
    if await redis.exists(names.head, names.snapshot, names.events):
        raise BackupRefused(
            f"namespace {names.namespace!r} holds a log already: a restore is for a namespace Redis lost"
            " (see `keyherald log status`; a running issuer repairs a log it holds itself)"
        )

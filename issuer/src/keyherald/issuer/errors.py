"""Errors of the issuer.

    KeyheraldError (keyherald.shared)
    ├── SettingsError (keyherald.shared)     a setting is wrong: wrong KEK, unreachable Redis
    └── IssuerError
        ├── KeyNotFound                      no key with that kid
        │   └── NamespaceEmpty               no control key: the namespace was never prepared
        ├── ControlKeyMismatch               Redis and the control key file hold different keys
        ├── DamagedBlob                      a sealed blob in Redis is not one keyherald wrote
        ├── BackupRefused                    a backup that does not verify, or nowhere to restore it
        ├── NamespaceOwnedElsewhere          the namespace belongs to another issuer
        ├── CorruptState                     what Redis holds does not verify
        ├── LogRefused                       Redis holds a log this writer must not build on
        ├── AppendContention                 the log stayed contended for too long
        ├── SnapshotTooLarge                 the state outgrew what a snapshot may hold
        ├── NotReplicated                    too few replicas confirmed a revocation in time
        ├── ClientNotFound                   no registered client with that client_id
        └── ClientExists                     a client of that name is registered already
"""

from __future__ import annotations

from keyherald.shared.errors import KeyheraldError, SettingsError

__all__ = [
    "AppendContention",
    "BackupRefused",
    "ClientExists",
    "ClientNotFound",
    "ControlKeyMismatch",
    "CorruptState",
    "DamagedBlob",
    "IssuerError",
    "KeyNotFound",
    "LogRefused",
    "NamespaceEmpty",
    "NamespaceOwnedElsewhere",
    "NotReplicated",
    "SnapshotTooLarge",
    "SettingsError",
]


class IssuerError(KeyheraldError):
    code = "issuer_error"


class KeyNotFound(IssuerError):
    code = "key_not_found"


class BackupRefused(IssuerError):
    code = "backup_refused"


class NamespaceEmpty(KeyNotFound):
    """No control key in Redis (nor a control key file): never prepared, or Redis lost it."""

    code = "namespace_empty"


class ControlKeyMismatch(IssuerError):
    code = "control_key_mismatch"


class DamagedBlob(IssuerError):
    """A sealed blob in Redis is not even well formed: junk written by someone else."""

    code = "damaged_blob"


class NamespaceOwnedElsewhere(IssuerError):
    code = "namespace_owned_elsewhere"


class CorruptState(IssuerError):
    code = "corrupt_state"


class AppendContention(IssuerError):
    code = "append_contention"


class ClientNotFound(IssuerError):
    code = "client_not_found"


class ClientExists(IssuerError):
    code = "client_exists"


class SnapshotTooLarge(IssuerError):
    code = "snapshot_too_large"


class LogRefused(IssuerError):
    """Redis holds a log older than this writer knows of, or one it cannot show is current
    (a stale log and no local record): appending would build on what may be a rollback."""

    code = "log_refused"


class NotReplicated(IssuerError):
    """A revocation is in the log on the primary, but fewer replicas than KEYHERALD_MIN_REPLICAS
    confirmed it in time: a failover now could lose it, so it is not reported done. Running
    it again is safe (a revocation is idempotent)."""

    code = "not_replicated"

    def __init__(self, seq: int, confirmed: int, needed: int, timeout: float) -> None:
        self.seq, self.confirmed, self.needed = seq, confirmed, needed
        self.retry_after = max(1, int(timeout) + 1)
        super().__init__(
            f"appended at seq {seq}, but only {confirmed} of the {needed} replica(s) KEYHERALD_MIN_REPLICAS asks"
            f" for confirmed it within {timeout:g}s: not done (a failover could lose it); run it again"
        )

"""Redis key names: every key of one keyherald deployment lives under its namespace."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["EVENT_FIELD", "Names", "stream_id", "validate_namespace"]

EVENT_FIELD = "event"
"""The one field of a stream entry: the event's compact JWS."""

_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")


def validate_namespace(namespace: str) -> str:
    if not _NAMESPACE.fullmatch(namespace):
        raise ValueError("a namespace is 1-64 letters, digits, '.', '_' or '-'")
    return namespace


def stream_id(seq: int) -> str:
    """Event ``seq`` is written at stream id ``<seq>-0``."""
    return f"{seq}-0"


@dataclass(frozen=True)
class Names:
    namespace: str

    def __post_init__(self) -> None:
        validate_namespace(self.namespace)

    def _key(self, suffix: str) -> str:
        # The hash tag keeps every key of a namespace in one Redis Cluster slot, so the
        # append script may touch the stream, the snapshot and the head at once.
        return f"{{{self.namespace}}}:{suffix}"

    @property
    def events(self) -> str:
        """The stream of signed events."""
        return self._key("events")

    @property
    def snapshot(self) -> str:
        """A string: the signed snapshot of the state at the head of the stream."""
        return self._key("snapshot")

    @property
    def head(self) -> str:
        """A string: the seq of the last event written (the append guard)."""
        return self._key("head")

    @property
    def replicated(self) -> str:
        """A string: the seq of the last event a writer waited for replicas to hold (a write of
        the waiting connection's own, which Redis WAIT counts from)."""
        return self._key("replicated")

    @property
    def signing_keys(self) -> str:
        """A hash kid -> encrypted private key (issuer only)."""
        return self._key("signing-keys")

    @property
    def control_key(self) -> str:
        """A string: the encrypted control key (issuer only)."""
        return self._key("control-key")

    @property
    def control_key_next(self) -> str:
        """A string: the encrypted control key an anchor rotation is introducing (issuer only)."""
        return self._key("control-key:next")

    @property
    def leader(self) -> str:
        """A string with a TTL: the id of the replica holding the leader lease."""
        return self._key("leader")

    @property
    def clients(self) -> str:
        """A hash client_id -> registered client (issuer only)."""
        return self._key("clients")

    @property
    def presence_index(self) -> str:
        """A sorted set: agent id -> when it last wrote its presence (the agent's clock, ms)."""
        return self._key("presence")

    def presence(self, agent_id: str) -> str:
        """A string with a TTL: one agent's presence record (advisory, unsigned)."""
        return self._key(f"presence:{agent_id}")

    def console_session(self, digest: str) -> str:
        """One operator console session, by the SHA-256 of its id (the id is only in the cookie)."""
        return self._key(f"console:session:{digest}")

    def ratelimit(self, kind: str, ident: str) -> str:
        return self._key(f"ratelimit:{kind}:{ident}")

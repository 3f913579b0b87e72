"""When a revocation may be reported done: once enough replicas hold it (Redis WAIT).

Redis replicates asynchronously. A revocation the primary holds alone is lost if the primary
fails before sending it on, and the replica promoted in its place never had it. So the
actions that take trust away (revoking a token, a subject or a key, an emergency rotation)
wait until ``KEYHERALD_MIN_REPLICAS`` replicas acknowledged the log up to that event, and
are reported as failed otherwise (:class:`~.errors.NotReplicated`): never silently accepted.

WAIT counts the writes of the connection it is sent on, so the wait writes one small key of
the namespace first (``{ns}:replicated``, on the server holding the namespace's slot) and
waits on that connection: the replicas that hold that write hold every event before it.
The choice of how many is a pure function (:func:`replicas_needed`); the I/O is here too,
small enough not to deserve a module of its own.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from keyherald.shared.connect import node_client
from keyherald.shared.names import Names

from .errors import NotReplicated

__all__ = ["Durability", "replicas_needed"]

log = logging.getLogger("keyherald.issuer")


def replicas_needed(setting: int | None, connected: int, *, had_replicas: bool = False) -> int:
    """KEYHERALD_MIN_REPLICAS, or by default (``auto``) 1 when the primary has a replica, or
    had one (a replica that dropped out does not make the primary a lone server: a revocation
    would then live on one machine)."""
    if setting is not None:
        return setting
    return 1 if connected > 0 or had_replicas else 0


class Durability:
    def __init__(self, redis: Redis, names: Names, *, min_replicas: int | None, timeout: float,
                 replicated_topology: bool = False) -> None:
        """``replicated_topology``: the URL names Sentinel (or a cluster), whose primaries are
        meant to have replicas: ``auto`` then asks for 1 even when none is connected now."""
        self._redis = redis
        self._had_replicas = replicated_topology
        self._names = names
        self.min_replicas = min_replicas
        self.timeout = timeout
        self.waits = 0
        self.shortfalls = 0

    async def confirm(self, seq: int) -> int:
        """Wait until enough replicas hold the log up to ``seq``; returns how many confirmed.
        Raises NotReplicated when too few did within the timeout (or the primary went away)."""
        if self.min_replicas == 0:
            return 0  # the operator asked for none: not even the INFO
        server = node_client(self._redis, self._names.head)
        try:
            info = await server.info("replication")
            connected = int(info.get("connected_slaves", 0))
            needed = replicas_needed(self.min_replicas, connected, had_replicas=self._had_replicas)
            self._had_replicas = self._had_replicas or connected > 0
            if needed == 0:
                return 0
            async with server.pipeline(transaction=False) as pipe:
                pipe.set(self._names.replicated, str(seq))
                pipe.execute_command("WAIT", needed, int(self.timeout * 1000))
                _, confirmed = await pipe.execute()
        except RedisError as exc:
            log.warning("waiting for replicas to hold seq %d failed (%s)", seq, type(exc).__name__)
            self.shortfalls += 1
            raise NotReplicated(seq, 0, max(1, self.min_replicas or 1), self.timeout) from None
        finally:
            if server is not self._redis:
                await server.aclose(close_connection_pool=True)
        self.waits += 1
        if int(confirmed) < needed:
            self.shortfalls += 1
            log.error("seq %d: %d of %d replica(s) confirmed within %gs", seq, int(confirmed), needed, self.timeout)
            raise NotReplicated(seq, int(confirmed), needed, self.timeout)
        return int(confirmed)

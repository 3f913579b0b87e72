"""The follower's reads from Redis, raw: replies stay bytes, shapes are normalised here.

redis-py's defaults fight a long blocking read: the default socket timeout (5 s) kills an
XREAD BLOCK longer than it, and the default retries replay a command on a dead connection
for a while before telling us. :func:`connect` builds a client whose socket timeout
exceeds the block time and which never retries by itself: the follower owns the retries.
With a client the agent built, every command goes over one connection of the follower's
own, read raw (see :meth:`LogSource.command`); a client the service passed in is used
through its ``execute_command``, with replies left undecoded either way.

Everything is read as bytes: an entry or checkpoint that is not ASCII is refused and counted
like any other malformed message, not a crash in a client's decoder. A checkpoint's size is
asked before it is fetched, so junk of many megabytes is refused unread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.client import NEVER_DECODE
from redis.exceptions import ResponseError

from keyherald.shared.connect import Role, build_client, open_client, read_target
from keyherald.shared.envelope import MAX_SNAPSHOT_LENGTH
from keyherald.shared.names import EVENT_FIELD, Names

__all__ = [
    "BATCH",
    "BLOCK_MS",
    "SOCKET_MARGIN",
    "CheckpointTooLarge",
    "EntryId",
    "LogSource",
    "NoSnapshot",
    "connect",
    "entries",
    "entry_id",
    "event_value",
    "follow_clients",
    "text",
]

BLOCK_MS = 2_000
"""XREAD BLOCK time: also how often an idle agent looks at the end of the stream."""
SOCKET_MARGIN = 3.0
"""Seconds the socket timeout exceeds the block time (the server's reply may lag a little)."""
BATCH = 512
"""Entries read per XREAD or XRANGE."""

EntryId = tuple[int, int]
_RAW: dict[str, Any] = {NEVER_DECODE: True}
_EVENT_KEY = EVENT_FIELD.encode()


class NoSnapshot(Exception):
    """The namespace holds no checkpoint yet: the issuer has not started (or Redis is empty)."""


class CheckpointTooLarge(Exception):
    """The checkpoint in Redis is longer than any genuine one may be: refused unread."""


def _options(block_ms: int | None) -> dict[str, Any]:
    block = BLOCK_MS if block_ms is None else block_ms
    return {
        "decode_responses": False, "socket_connect_timeout": 2.0, "socket_timeout": block / 1000 + SOCKET_MARGIN,
        "socket_keepalive": True, "retry": Retry(NoBackoff(), 0),
    }


def connect(url: str, *, block_ms: int | None = None, role: Role = "primary", seed: str = "") -> Redis:
    """A client fit for blocking reads: socket timeout above the block time, no hidden retries.

    A connection that dies silently (no RST: a partition, a dead NAT entry) is then noticed
    within block + SOCKET_MARGIN seconds, and the follower's own backoff takes over.
    """
    return build_client(url, role=role, seed=seed, **_options(block_ms))  # retry: none (Retry(.., 0))


async def follow_clients(
    redis_url: str, read_url: str | None, seed: str, *, presence: bool = True,
) -> tuple[Redis, Redis | None]:
    """The client the agent follows the log with (KEYHERALD_REDIS_READ_URL's server, or a
    replica picked by ``seed``, or the primary), and, when that is not the primary and the agent
    writes its presence, a client of the primary for that (None: none needed)."""
    target, role = read_target(redis_url, read_url)
    reader = await open_client(target, role=role, seed=seed, **_options(None))
    if read_url is None or not read_url.strip() or not presence:
        return reader, None
    return reader, await open_client(redis_url, **_options(None))


def entry_id(value: object) -> EntryId | None:
    """``(ms, seq)`` of a stream id as Redis sends it, or None when it is not one."""
    raw = value.encode("ascii", "replace") if isinstance(value, str) else value
    if not isinstance(raw, bytes):
        return None
    ms, _, seq = raw.partition(b"-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return None


def entries(response: Any) -> list[Any]:
    """The entries of an XREAD reply: RESP2 ``[[stream, entries]]``, RESP3 ``{stream:
    entries}``, or redis-py's RESP3 ``xread`` reply, ``{stream: [entries]}``."""
    if not response:
        return []
    batches = response.values() if isinstance(response, dict) else [b for _stream, b in response]
    found: list[Any] = []
    for batch in batches:
        if batch and isinstance(batch[0], list) and (not batch[0] or isinstance(batch[0][0], list | tuple)):
            batch = [e for inner in batch if inner for e in inner]  # one level deeper (maybe empty)
        found.extend(batch)
    return found


def text(value: object) -> object:
    """ASCII text from bytes (None when it is not ASCII); anything else as it is."""
    if isinstance(value, bytes):
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            return None
    return value


def event_value(fields: object) -> object:
    """The event field of an entry: a flat [field, value, ...] list as Redis sends it, or
    a dict (a client's parsed reply)."""
    if isinstance(fields, list):
        if len(fields) == 2 and fields[0] == _EVENT_KEY:
            return fields[1]
        for i in range(0, len(fields) - 1, 2):
            if fields[i] in (_EVENT_KEY, EVENT_FIELD):
                return fields[i + 1]
        return None
    if not isinstance(fields, dict):
        return None
    value = fields.get(_EVENT_KEY)
    return fields.get(EVENT_FIELD) if value is None else value


class LogSource:
    """Reads one namespace's log. Commands run one at a time, from the follower's task."""

    def __init__(self, redis: Redis, names: Names, *, own_connection: bool = False) -> None:
        self.redis = redis
        self._names = names
        self._own = own_connection and hasattr(redis, "connection_pool")  # a RedisCluster routes each command
        self._conn: Any = None
        self.client_name = f"keyherald-agent:{names.namespace}"
        """Set on the follower's connection: the fleet view counts connections by it to say
        how many agents it cannot see (those that report no presence)."""

    async def command(self, *args: Any) -> Any:
        """One command, reply as the server sent it (bytes).

        With a client the agent built, on a connection of the follower's own: it skips the
        client's per-command machinery (pool checkout, retry wrapper, reply callbacks), so
        each event reaches the agent about 10 µs sooner, and the agent holds one connection.
        """
        if not self._own:
            return await self.redis.execute_command(*args, **_RAW)  # type: ignore[no-untyped-call]
        conn = await self._connection()
        try:
            await conn.send_command(*args)
            return await conn.read_response()
        except ResponseError:
            raise  # an error reply, read whole: the connection is fine
        except BaseException:
            await self._drop(conn)
            raise

    async def pipeline(self, commands: Sequence[tuple[object, ...]]) -> list[Any]:
        """Several commands in one round trip; the first error reply is raised after all
        replies were read (so the connection stays clean)."""
        if not self._own:
            async with self.redis.pipeline(transaction=False) as pipe:
                for command in commands:
                    pipe.execute_command(*command)
                replies: list[Any] = await pipe.execute(raise_on_error=True)
                return replies
        conn = await self._connection()
        try:
            await conn.send_packed_command(conn.pack_commands(commands))
            replies = []
            error: ResponseError | None = None
            for _ in commands:
                try:
                    replies.append(await conn.read_response())
                except ResponseError as exc:
                    error = error or exc
                    replies.append(exc)
        except BaseException:
            await self._drop(conn)
            raise
        if error is not None:
            raise error
        return replies

    async def _connection(self) -> Any:
        conn = self._conn
        if conn is None:
            conn = self._conn = await self.redis.connection_pool.get_connection()  # type: ignore[no-untyped-call]
            try:
                await conn.send_command("CLIENT", "SETNAME", self.client_name)
                await conn.read_response()
            except ResponseError:
                pass  # not allowed (an ACL without client|setname): the name is only a hint
            except BaseException:
                await self._drop(conn)
                raise
        return conn

    async def _drop(self, conn: Any) -> None:
        """A reply half read (cancelled, timed out, cut) would poison the next command."""
        self._conn = None
        with contextlib.suppress(Exception):
            await conn.disconnect()
        await self.redis.connection_pool.release(conn)

    async def close(self) -> None:
        """Give the follower's connection back (the loop must be stopped first)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await self.redis.connection_pool.release(conn)

    async def xread(self, start: str, block: int) -> list[Any]:
        reply = await self.command("XREAD", "COUNT", BATCH, "BLOCK", block, "STREAMS", self._names.events, start)
        return entries(reply)

    async def tail(self, after_seq: int) -> list[Any]:
        """Entries from ``<after_seq + 1>-0`` on (at most BATCH)."""
        reply = await self.command("XRANGE", self._names.events, f"{after_seq + 1}-0", "+", "COUNT", BATCH)
        return list(reply or [])

    async def last_entry(self) -> Any | None:
        """The newest entry of the stream: a small signed record of how far the log goes."""
        reply = await self.command("XREVRANGE", self._names.events, "+", "-", "COUNT", 1)
        return reply[0] if reply else None

    async def checkpoint_size(self) -> int:
        return int(await self.command("STRLEN", self._names.snapshot))

    async def checkpoint(self) -> bytes:
        """The checkpoint's bytes; NoSnapshot when there is none, CheckpointTooLarge (unread)
        when it is longer than a genuine one may be."""
        size = await self.checkpoint_size()
        if size == 0:
            raise NoSnapshot(f"no checkpoint in namespace {self._names.namespace!r} yet")
        if size > MAX_SNAPSHOT_LENGTH:
            raise CheckpointTooLarge(f"the checkpoint in Redis is {size} bytes, over {MAX_SNAPSHOT_LENGTH}")
        raw = await self.command("GET", self._names.snapshot)
        if raw is None:
            raise NoSnapshot(f"no checkpoint in namespace {self._names.namespace!r} yet")
        return raw if isinstance(raw, bytes) else str(raw).encode("utf-8", "surrogateescape")

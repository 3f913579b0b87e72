"""The reads of concurrent requests share one connection to Redis and one write per turn.

Each token request needs one read (the log's head and both failure counters: one MGET).
Through redis-py's client each command costs about as much CPU as the ES256 signature (the
pool, packing every argument, the retry wrapper, a coroutine and a timeout per reply).
Here commands are packed by hand and queued; everything queued during one turn of the event
loop leaves in one write at the end of it, and replies are parsed by hiredis as they arrive
and handed to their callers in order. At low load a write carries one command and adds no
wait; under load it carries every request of the turn. Reads only, so nothing is stale:
every request sees Redis as it is when its command arrives there.

The connection is one redis-py made as its pool makes them (so TLS, a password, an ACL
user and the database are set up as everywhere else), outside the pool: this module reads
and writes its socket itself. If it breaks, every command waiting on it fails (a RedisError, a
503 for the request) and the next one connects again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

__all__ = ["LookupBatcher"]

log = logging.getLogger("keyherald.issuer")


def _bulk(value: str) -> bytes:
    data = value.encode("utf-8", "surrogatepass")
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _command(*args: str) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(_bulk(a) for a in args)


class _Pipe(asyncio.Protocol):
    """One Redis connection: commands out in order, replies back to their futures in order."""

    def __init__(self, transport: asyncio.Transport, owner: object) -> None:
        self.transport = transport
        self._owner = owner
        """redis-py's connection object: kept, or its streams' finalizer would close the socket."""
        self._reader = hiredis.Reader(encoding="utf-8", replyError=ResponseError)
        self._waiting: deque[Callable[[Any], None]] = deque()
        """Who gets each reply, in order; an error (a ResponseError, a lost connection) is
        handed over as the reply."""
        self._out: list[bytes] = []
        self.broken: Exception | None = None

    def send(self, packed: bytes, reply: Callable[[Any], None]) -> None:
        """Queue ``packed``; ``reply`` is called with its reply, from the reading side."""
        if self.broken is not None:
            reply(self.broken)
            return
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(packed)
        self._waiting.append(reply)

    def _flush(self) -> None:
        out, self._out = self._out, []
        if out and self.broken is None:
            self.transport.write(b"".join(out))

    def data_received(self, data: bytes) -> None:
        replies: list[Any] = []
        try:
            self._reader.feed(data)
            while (reply := self._reader.gets()) is not False:
                replies.append(reply)
            if len(replies) > len(self._waiting):
                raise ValueError("a reply nobody asked for")
        except Exception as exc:  # not Redis speaking, or text that is not UTF-8
            self.fail(RedisConnectionError(f"unexpected data from Redis ({type(exc).__name__})"))
            self.transport.close()
            return
        for reply in replies:
            try:
                self._waiting.popleft()(reply)
            except Exception:  # a caller's trouble is its own: the other replies still go out
                log.exception("a Redis reply's recipient failed")

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError("the connection to Redis was lost"))

    def eof_received(self) -> bool | None:
        self.fail(RedisConnectionError("Redis closed the connection"))
        return None

    def fail(self, error: Exception) -> None:
        if self.broken is None:
            self.broken = error
        while self._waiting:
            self._waiting.popleft()(error)

    def close(self) -> None:
        self.fail(RedisConnectionError("closed"))
        self.transport.close()


def _settle(future: asyncio.Future[Any], reply: Any) -> None:
    if future.done():  # its caller was cancelled: the reply was read all the same
        return
    if isinstance(reply, Exception):
        future.set_exception(reply)
    else:
        future.set_result(reply)


class _Collected:
    """The replies of commands sent together, handed over once the last is in."""

    __slots__ = ("_count", "_recipient", "_replies")

    def __init__(self, count: int, recipient: Callable[[list[Any]], None]) -> None:
        self._count = count
        self._recipient = recipient
        self._replies: list[Any] = []

    def __call__(self, reply: Any) -> None:
        self._replies.append(reply)
        if len(self._replies) == self._count:
            self._recipient(self._replies)


def _settle_all(future: asyncio.Future[Any], replies: list[Any]) -> None:
    if future.done():
        return
    lost = next((r for r in replies if isinstance(r, RedisConnectionError)), None)
    if lost is not None:
        future.set_exception(lost)
    else:
        future.set_result(replies)


class LookupBatcher:
    """``await batcher("MGET", k1, k2)``: the reply of that read command, batched with its peers.
    An error reply raises (a ResponseError) in its own caller only."""

    def __init__(self, redis: Callable[[], Redis]) -> None:
        self._redis = redis
        self._pipe: _Pipe | None = None
        self._connecting: asyncio.Future[_Pipe] | None = None

    async def __call__(self, *command: str) -> Any:
        pipe = self._pipe
        if pipe is None or pipe.broken is not None:
            pipe = await self._connected()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        pipe.send(_command(*command), functools.partial(_settle, future))
        return await future

    async def many(self, *commands: tuple[str, ...]) -> list[Any]:
        """The replies of several read commands sent together (one round trip); an error reply
        is returned in its place, a lost connection raises."""
        pipe = self._pipe
        if pipe is None or pipe.broken is not None:
            pipe = await self._connected()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        collect = _Collected(len(commands), functools.partial(_settle_all, future))
        for command in commands:
            pipe.send(_command(*command), collect)
        return await future  # type: ignore[no-any-return]

    @staticmethod
    def packed(*command: str) -> bytes:
        """``command`` as Redis reads it, for :meth:`send_now` (a caller may keep it)."""
        return _command(*command)

    def send_now(self, reply: Callable[[list[Any]], None], *packed: bytes) -> bool:
        """Queue packed commands if connected (False otherwise: use the coroutine); ``reply``
        gets their replies (an error in place of one), all at once, when they come. For callers
        that do not wait in a coroutine."""
        pipe = self._pipe
        if pipe is None or pipe.broken is not None:
            return False
        collect = _Collected(len(packed), reply)
        for command in packed:
            pipe.send(command, collect)
        return True

    async def _connected(self) -> _Pipe:
        """The pipe, connecting once for every caller that needs it meanwhile."""
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
            self._connecting.add_done_callback(self._connected_done)
        return await asyncio.shield(self._connecting)

    def _connected_done(self, future: asyncio.Future[_Pipe]) -> None:
        self._connecting = None
        if not future.cancelled() and future.exception() is None:
            self._pipe = future.result()

    async def _connect(self) -> _Pipe:
        old, self._pipe = self._pipe, None
        if old is not None:
            old.close()
        pool = self._redis().connection_pool
        conn: Any = pool.connection_class(**pool.connection_kwargs)  # set up as the pool's, not counted in it
        await conn.connect()
        transport: asyncio.Transport = conn._writer.transport
        pipe = _Pipe(transport, conn)
        transport.set_protocol(pipe)  # redis-py's reader no longer sees this socket: it is ours
        return pipe

    def close(self) -> None:
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            with contextlib.suppress(Exception):
                pipe.close()

"""The reads of concurrent requests share one write to Redis and one connection.

Each token request needs one read (the log's head and both failure counters: one MGET).
Through redis-py's client each command costs about as much CPU as the ES256 signature (the
pool, packing every argument, the retry wrapper, a pipeline's bookkeeping). Here commands
are packed by hand, requests that arrive while a batch is out wait for the next one, and
each batch is one write on a connection the batcher keeps, its replies read in order. At
low load a batch is one request and adds no wait; under load it holds the requests that
came during one round trip. Reads only, so nothing is stale: every request still sees
Redis as it is when its batch is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

__all__ = ["LookupBatcher"]

_Pending = tuple[bytes, "asyncio.Future[Any]"]


def _bulk(value: str) -> bytes:
    data = value.encode("utf-8", "surrogatepass")
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _command(*args: str) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(_bulk(a) for a in args)


class LookupBatcher:
    """``await batcher("MGET", k1, k2)``: the reply of that read command, batched with its peers.
    An error reply raises (a ResponseError) in its own caller only."""

    def __init__(self, redis: Callable[[], Redis]) -> None:
        self._redis = redis
        self._pending: list[_Pending] = []
        self._task: asyncio.Task[None] | None = None
        self._conn: Any = None
        self._conn_redis: Redis | None = None

    async def __call__(self, *command: str) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((_command(*command), future))
        if self._task is None:
            self._task = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        """Send batch after batch while requests wait; one batch out at a time."""
        try:
            await asyncio.sleep(0)  # let the requests of this turn of the loop join the first batch
            while self._pending:
                batch, self._pending = self._pending, []
                await self._send(batch)
        finally:
            self._task = None
            waiting, self._pending = self._pending, []  # left only when the loop above failed
            for *_, future in waiting:
                future.cancel()

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            replies = await self._exchange([packed for packed, _ in batch])
        except asyncio.CancelledError:
            for *_, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (*_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its request was cancelled meanwhile
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _exchange(self, commands: list[bytes]) -> list[Any]:
        """Write the commands at once, read their replies in order (an error reply is returned)."""
        conn = await self._connection()
        try:
            await conn.send_packed_command(b"".join(commands))
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await conn.read_response())
                except ResponseError as exc:  # the command's own error, read whole
                    replies.append(exc)
            return replies
        except BaseException:
            # A reply half read (cancelled, cut) would poison the next batch: start afresh.
            await self._drop()
            raise

    async def _connection(self) -> Any:
        redis = self._redis()
        if self._conn is not None and self._conn_redis is redis:
            return self._conn
        await self._drop()
        self._conn = await redis.connection_pool.get_connection()  # type: ignore[no-untyped-call]
        self._conn_redis = redis
        return self._conn

    async def _drop(self) -> None:
        conn, redis, self._conn, self._conn_redis = self._conn, self._conn_redis, None, None
        if conn is None or redis is None:
            return
        with contextlib.suppress(Exception):
            await conn.disconnect()
        with contextlib.suppress(Exception):
            await redis.connection_pool.release(conn)


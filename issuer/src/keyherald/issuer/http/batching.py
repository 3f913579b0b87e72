"""Client lookups of concurrent requests share one Redis pipeline.

Each token request needs one read (the client record and both failure counters, by a small
script). redis-py spends about 100 us of CPU per command on its pool, packing and parsing,
more than the ES256 signature; queued in one pipeline, the same commands cost about a third
of that each. Requests that arrive in the same turn of the event loop are sent together on
the next turn: at low load that is a batch of one and adds no wait; under load it is the
number of requests in flight. Reads only, so nothing is stale: every request still sees
Redis as it is when its batch is sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

__all__ = ["LookupBatcher"]

_Pending = tuple[list[str], list[str], "asyncio.Future[list[Any]]"]


class LookupBatcher:
    """``await batcher(keys=..., args=...)`` runs ``script`` with them, batched with its peers."""

    def __init__(self, redis: Callable[[], Redis], script: str) -> None:
        self._redis = redis
        self._script = script
        self._pending: list[_Pending] = []
        self._running: set[asyncio.Task[None]] = set()
        self._single: AsyncScript | None = None
        self._single_redis: Redis | None = None

    async def __call__(self, *, keys: list[str], args: list[str]) -> list[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._pending.append((keys, args, future))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            results = await (self._one(batch[0]) if len(batch) == 1 else self._many(batch))
        except asyncio.CancelledError:
            for _, _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, _, future), result in zip(batch, results, strict=True):
            if future.done():  # its request was cancelled meanwhile
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(list(result))

    async def _one(self, item: _Pending) -> list[Any]:
        """A batch of one (low load): a plain EVALSHA is cheaper than a pipeline."""
        redis = self._redis()
        if self._single is None or self._single_redis is not redis:
            self._single, self._single_redis = redis.register_script(self._script), redis
        keys, args, _ = item
        try:
            return [await self._single(keys=keys, args=args)]
        except ResponseError as exc:
            return [exc]  # the script's own error belongs to its caller, as in a pipeline

    async def _many(self, batch: list[_Pending]) -> list[Any]:
        async with self._redis().pipeline(transaction=False) as pipe:
            for keys, args, _ in batch:
                pipe.eval(self._script, len(keys), *keys, *args)
            return await pipe.execute(raise_on_error=False)

"""Concurrent reads share one write to Redis: each caller still gets its own answer, errors
reach every caller of the batch, a cancelled caller harms nobody, and Redis down is a 503."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from keyherald.issuer.http import create_app
from keyherald.issuer.http.batching import LookupBatcher
from keyherald.issuer.runtime import IssuerRuntime
from keyherald.shared.connect import build_client
from tests.tokenservice import add_client, basic, issuer

__all__ = ["issuer"]

@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = build_client(redis_url, decode_responses=True)
    yield client
    await client.aclose()


def _dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


class CountingRedis:
    """Counts the connections asked of a real client."""

    def __init__(self, client: Redis) -> None:
        self.client = client
        self.connections = 0

    def __call__(self) -> Redis:
        self.connections += 1
        return self.client


async def test_each_caller_gets_its_own_answer_on_one_connection(redis: Redis, namespace: str) -> None:
    keys = [f"{{{namespace}}}:k{i}" for i in range(40)]
    await redis.mset({k: f"v{i}" for i, k in enumerate(keys)})
    counting = CountingRedis(redis)
    batcher = LookupBatcher(counting)
    results = await asyncio.gather(*(batcher("MGET", k, f"{{{namespace}}}:none") for k in keys))
    assert results == [[f"v{i}", None] for i in range(40)]
    assert await batcher("GET", f"{{{namespace}}}:missing") is None
    assert counting.connections == 1
    batcher.close()
    assert await batcher("GET", f"{{{namespace}}}:k7 ünïcode") is None  # any text, packed as UTF-8


async def test_a_redis_error_reaches_every_caller_of_the_batch() -> None:
    dead = build_client(_dead_url(), socket_connect_timeout=1)
    try:
        batcher = LookupBatcher(lambda: dead)
        results = await asyncio.gather(*(batcher("GET", "{x}:k") for _ in range(5)),
                                       return_exceptions=True)
        assert all(isinstance(r, RedisConnectionError) for r in results)
    finally:
        await dead.aclose()


async def test_an_error_reply_reaches_only_its_caller(redis: Redis, namespace: str) -> None:
    await redis.hset(f"{{{namespace}}}:hash", "f", "v")
    batcher = LookupBatcher(lambda: redis)
    good, bad, after = await asyncio.gather(
        batcher("MGET", f"{{{namespace}}}:k", f"{{{namespace}}}:hash"),
        batcher("GET", f"{{{namespace}}}:hash"),  # GET on a hash: WRONGTYPE
        batcher("HGET", f"{{{namespace}}}:hash", "f"),
        return_exceptions=True,
    )
    assert good == [None, None] and after == "v"
    assert isinstance(bad, Exception) and "WRONGTYPE" in str(bad)
    with pytest.raises(Exception, match="WRONGTYPE"):  # alone in its batch too
        await batcher("GET", f"{{{namespace}}}:hash")
    assert await batcher("HGET", f"{{{namespace}}}:hash", "f") == "v"  # the connection is fine
    batcher.close()


async def test_a_lost_connection_fails_its_callers_and_the_next_call_connects_again(
    redis: Redis, namespace: str
) -> None:
    await redis.set(f"{{{namespace}}}:a", "1")
    counting = CountingRedis(redis)
    batcher = LookupBatcher(counting)
    assert await batcher("GET", f"{{{namespace}}}:a") == "1"
    ident = await batcher("CLIENT", "ID")  # its own connection's
    waiting = asyncio.ensure_future(batcher("BLPOP", f"{{{namespace}}}:empty", "10"))  # waits on Redis
    await asyncio.sleep(0.1)
    assert await redis.execute_command("CLIENT", "KILL", "ID", ident) == 1
    with pytest.raises(RedisConnectionError):
        await waiting
    assert await batcher("GET", f"{{{namespace}}}:a") == "1"
    assert counting.connections == 2
    batcher.close()


async def test_a_cancelled_caller_does_not_disturb_the_others(redis: Redis, namespace: str) -> None:
    await redis.set(f"{{{namespace}}}:b", "2")
    batcher = LookupBatcher(lambda: redis)
    first = asyncio.create_task(batcher("GET", f"{{{namespace}}}:a"))
    second = asyncio.create_task(batcher("GET", f"{{{namespace}}}:b"))
    await asyncio.sleep(0)
    first.cancel()
    assert await second == "2"
    assert await batcher("GET", f"{{{namespace}}}:b") == "2"  # the cancelled one's reply was read
    batcher.close()
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_token_endpoint_answers_503_without_a_trace_when_redis_is_down(issuer: IssuerRuntime) -> None:
    secret = await add_client(issuer, "orders", ["inventory"])
    app = create_app(issuer)
    dead = build_client(_dead_url(), socket_connect_timeout=1)
    app.service.lookup = LookupBatcher(lambda: dead)  # type: ignore[attr-defined]
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://issuer.test") as http:
            response = await http.post("/token", data={"grant_type": "client_credentials"},
                                       headers=basic("orders", secret))
    finally:
        await dead.aclose()
    assert response.status_code == 503
    assert response.json()["error"] == "temporarily_unavailable"
    assert response.headers["retry-after"] == "1" and "Traceback" not in response.text


async def test_a_reply_it_cannot_read_fails_its_batch_and_the_connection_starts_afresh(
    redis: Redis, namespace: str
) -> None:
    """Whoever can write Redis can store text that is not UTF-8: the read fails (a 503 for
    the request), the connection is dropped, and the next read works."""
    await redis.execute_command("SET", f"{{{namespace}}}:bad", b"\xff\xfe")
    await redis.set(f"{{{namespace}}}:good", "1")
    counting = CountingRedis(redis)
    batcher = LookupBatcher(counting)
    with pytest.raises(RedisConnectionError):
        await batcher("GET", f"{{{namespace}}}:bad")
    assert await batcher("GET", f"{{{namespace}}}:good") == "1"
    assert counting.connections == 2
    batcher.close()

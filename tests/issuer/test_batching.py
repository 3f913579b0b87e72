"""Concurrent client lookups share a pipeline: each caller still gets its own answer, errors
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
from tests.tokenservice import add_client, basic, issuer

__all__ = ["issuer"]

SCRIPT = "return {redis.call('GET', KEYS[1]), ARGV[1]}"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


def _dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


class CountingRedis:
    """Counts the pipelines opened on a real client."""

    def __init__(self, client: Redis) -> None:
        self.client = client
        self.pipelines = 0

    def __call__(self) -> Redis:
        self.pipelines += 1
        return self.client


async def test_each_caller_gets_its_own_answer_from_one_pipeline(redis: Redis, namespace: str) -> None:
    keys = [f"{{{namespace}}}:k{i}" for i in range(40)]
    await redis.mset({k: f"v{i}" for i, k in enumerate(keys)})
    counting = CountingRedis(redis)
    batcher = LookupBatcher(counting, SCRIPT)
    results = await asyncio.gather(*(batcher(keys=[k], args=[str(i)]) for i, k in enumerate(keys)))
    assert results == [[f"v{i}", str(i)] for i in range(40)]
    assert counting.pipelines == 1
    assert await batcher(keys=[f"{{{namespace}}}:missing"], args=["x"]) == [None, "x"]
    assert counting.pipelines == 2


async def test_a_redis_error_reaches_every_caller_of_the_batch() -> None:
    dead = Redis.from_url(_dead_url(), socket_connect_timeout=1)
    try:
        batcher = LookupBatcher(lambda: dead, SCRIPT)
        results = await asyncio.gather(*(batcher(keys=["{x}:k"], args=["a"]) for _ in range(5)),
                                       return_exceptions=True)
        assert all(isinstance(r, RedisConnectionError) for r in results)
    finally:
        await dead.aclose()


async def test_a_script_error_reaches_only_its_caller(redis: Redis, namespace: str) -> None:
    await redis.hset(f"{{{namespace}}}:hash", "f", "v")
    batcher = LookupBatcher(lambda: redis, SCRIPT)
    good, bad = await asyncio.gather(
        batcher(keys=[f"{{{namespace}}}:k"], args=["a"]),
        batcher(keys=[f"{{{namespace}}}:hash"], args=["b"]),  # GET on a hash: WRONGTYPE
        return_exceptions=True,
    )
    assert good == [None, "a"]
    assert isinstance(bad, Exception) and "WRONGTYPE" in str(bad)
    with pytest.raises(Exception, match="WRONGTYPE"):  # alone, it takes the single-command path
        await batcher(keys=[f"{{{namespace}}}:hash"], args=["c"])


async def test_a_cancelled_caller_does_not_disturb_the_others(redis: Redis, namespace: str) -> None:
    batcher = LookupBatcher(lambda: redis, SCRIPT)
    first = asyncio.create_task(batcher(keys=[f"{{{namespace}}}:a"], args=["1"]))
    second = asyncio.create_task(batcher(keys=[f"{{{namespace}}}:b"], args=["2"]))
    await asyncio.sleep(0)
    first.cancel()
    assert await second == [None, "2"]
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_token_endpoint_answers_503_without_a_trace_when_redis_is_down(issuer: IssuerRuntime) -> None:
    secret = await add_client(issuer, "orders", ["inventory"])
    app = create_app(issuer)
    dead = Redis.from_url(_dead_url(), socket_connect_timeout=1)
    app.service.lookup = LookupBatcher(lambda: dead, "return 1")  # type: ignore[attr-defined]
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

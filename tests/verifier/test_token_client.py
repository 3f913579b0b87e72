"""TokenClient: caching, refresh at 80 %, one shared fetch, retries, and the httpx.Auth flow.

The issuer is an httpx.MockTransport that counts POSTs; the clock is a ManualClock and the
backoff sleeps are recorded, not slept. One test runs against the real issuer.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from urllib.parse import parse_qs

import httpx
import pytest

from keyherald.issuer.runtime import IssuerRuntime
from keyherald.shared.clock import ManualClock
from keyherald.verifier.client import InvalidClient, TokenClient, TokenRequestError
from tests.tokenservice import add_client, asgi_client, issuer

__all__ = ["issuer"]

TOKEN_URL = "http://issuer.test/token"
Handler = Callable[[httpx.Request], httpx.Response]


class FakeIssuer:
    """Answers /token with numbered tokens, or with whatever the test queues first."""

    def __init__(self, lifetime: int = 100) -> None:
        self.lifetime = lifetime
        self.posts: list[httpx.Request] = []
        self.queued: list[httpx.Response | Exception] = []
        self.delay = 0.0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.posts.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.queued:
            answer = self.queued.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
        body = {"access_token": f"token-{len(self.posts)}", "token_type": "Bearer",
                "expires_in": self.lifetime, "scope": ""}
        return httpx.Response(200, json=body)


@pytest.fixture
def fake() -> FakeIssuer:
    return FakeIssuer()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make(fake: FakeIssuer, clock: ManualClock, sleeps: list[float]) -> Callable[..., TokenClient]:
    async def record(seconds: float) -> None:
        sleeps.append(seconds)

    def build(**options: object) -> TokenClient:
        http = httpx.AsyncClient(transport=httpx.MockTransport(fake))
        return TokenClient(TOKEN_URL, "orders", "s3cret&+:", audience="inventory", clock=clock, http=http,
                           sleep=record, **options)  # type: ignore[arg-type]

    return build


async def test_request_is_client_credentials_with_basic_auth(make: Callable[..., TokenClient],
                                                             fake: FakeIssuer) -> None:
    client = make(scope=["inventory:read", "inventory:write"])
    assert await client.token() == "token-1"
    request = fake.posts[0]
    form = parse_qs(request.content.decode())
    assert form == {"grant_type": ["client_credentials"], "audience": ["inventory"],
                    "scope": ["inventory:read inventory:write"]}
    scheme, _, value = request.headers["authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(value).decode() == "orders:s3cret%26%2B%3A"  # form-urlencoded halves


async def test_cached_until_80_percent_of_its_lifetime(make: Callable[..., TokenClient], fake: FakeIssuer,
                                                       clock: ManualClock) -> None:
    client = make()
    assert await client.token() == "token-1"
    clock.advance(79)
    assert await client.token() == "token-1"
    assert len(fake.posts) == 1
    clock.advance(1.5)  # 80.5 s of 100: refreshed in the background, the old one serves meanwhile
    assert await client.token() == "token-1"
    await _settled(client)
    assert await client.token() == "token-2"
    assert len(fake.posts) == 2


async def _settled(client: TokenClient) -> None:
    for _ in range(200):
        if client._inflight is None:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the background refresh did not finish")


async def test_callers_wait_only_when_no_token_is_still_usable(make: Callable[..., TokenClient],
                                                               fake: FakeIssuer, clock: ManualClock) -> None:
    fake.delay = 0.02
    client = make()
    assert await client.token() == "token-1"
    clock.advance(96)  # 4 s before exp: too close to hand out
    assert await client.token() == "token-2"
    assert len(fake.posts) == 2


async def test_concurrent_callers_share_one_fetch(make: Callable[..., TokenClient], fake: FakeIssuer,
                                                  clock: ManualClock) -> None:
    fake.delay = 0.02
    client = make()
    tokens = await asyncio.gather(*(client.token() for _ in range(50)))
    assert set(tokens) == {"token-1"} and len(fake.posts) == 1
    clock.advance(90)  # due for refresh, still valid: nobody waits, one fetch goes out
    tokens = await asyncio.gather(*(client.token() for _ in range(50)))
    assert set(tokens) == {"token-1"}
    await _settled(client)
    assert await client.token() == "token-2" and len(fake.posts) == 2


async def test_a_cancelled_caller_does_not_cancel_the_shared_fetch(make: Callable[..., TokenClient],
                                                                   fake: FakeIssuer) -> None:
    fake.delay = 0.05
    client = make()
    first = asyncio.create_task(client.token())
    second = asyncio.create_task(client.token())
    await asyncio.sleep(0.01)
    first.cancel()
    assert await second == "token-1"
    assert len(fake.posts) == 1


async def test_transient_failures_are_retried_with_backoff(make: Callable[..., TokenClient], fake: FakeIssuer,
                                                           sleeps: list[float]) -> None:
    fake.queued = [
        httpx.ConnectError("refused"),
        httpx.Response(503, json={"error": "temporarily_unavailable"}),
        httpx.Response(429, headers={"Retry-After": "7"}, json={"error": "temporarily_unavailable"}),
        httpx.Response(503, headers={"Retry-After": "3"}, json={"error": "temporarily_unavailable"}),
        httpx.Response(500, text="oops"),
    ]
    client = make(max_attempts=6, backoff=0.2, backoff_cap=1.0)
    assert await client.token() == "token-6"
    assert len(fake.posts) == 6
    assert sleeps[2] == 7 and sleeps[3] == 3  # Retry-After honoured, on 429 and on 503
    backoff = [sleeps[0], sleeps[1], sleeps[4]]
    assert 0.1 <= backoff[0] <= 0.2 and 0.2 <= backoff[1] <= 0.4 and 0.5 <= backoff[2] <= 1.0


async def test_gives_up_after_max_attempts(make: Callable[..., TokenClient], fake: FakeIssuer) -> None:
    fake.queued = [httpx.Response(503, json={"error": "temporarily_unavailable"})] * 3
    client = make(max_attempts=3)
    with pytest.raises(TokenRequestError) as info:
        await client.token()
    assert info.value.status == 503 and len(fake.posts) == 3


async def test_invalid_client_and_other_4xx_are_not_retried(make: Callable[..., TokenClient],
                                                            fake: FakeIssuer) -> None:
    fake.queued = [httpx.Response(401, json={"error": "invalid_client", "error_description": "bad"})]
    client = make()
    with pytest.raises(InvalidClient):
        await client.token()
    assert len(fake.posts) == 1
    fake.queued = [httpx.Response(400, json={"error": "invalid_scope"})]
    with pytest.raises(TokenRequestError) as info:
        await client.token()
    assert info.value.error == "invalid_scope" and len(fake.posts) == 2
    assert "s3cret" not in str(info.value)


async def test_a_failed_early_refresh_keeps_the_current_token(make: Callable[..., TokenClient], fake: FakeIssuer,
                                                              clock: ManualClock) -> None:
    client = make(max_attempts=1)
    assert await client.token() == "token-1"
    clock.advance(85)
    fake.queued = [httpx.Response(503, json={"error": "temporarily_unavailable"})]
    assert await client.token() == "token-1"
    clock.advance(20)  # expired now: the failure surfaces
    fake.queued = [httpx.Response(503, json={"error": "temporarily_unavailable"})]
    with pytest.raises(TokenRequestError):
        await client.token()


async def test_auth_attaches_the_token_and_refreshes_once_on_invalid_token(make: Callable[..., TokenClient],
                                                                           fake: FakeIssuer) -> None:
    client = make()
    seen: list[str] = []
    refuse = {"token-1", "token-3", "token-4"}

    def service(request: httpx.Request) -> httpx.Response:
        token = request.headers["authorization"].removeprefix("Bearer ")
        seen.append(token)
        if token in refuse:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return httpx.Response(200, json={"ok": True})

    async with httpx.AsyncClient(transport=httpx.MockTransport(service), auth=client.auth()) as http:
        assert (await http.get("http://inventory.test/items")).status_code == 200
        assert seen == ["token-1", "token-2"]
        assert (await http.get("http://inventory.test/items")).status_code == 200
        assert seen[-1] == "token-2" and len(fake.posts) == 2
        await client.refresh()  # token-3, which the service refuses, as does the next one
        response = await http.get("http://inventory.test/items")
        assert response.status_code == 401  # one refresh and one retry, no loop
        assert seen[-2:] == ["token-3", "token-4"] and len(fake.posts) == 4


async def test_a_service_refusing_every_token_costs_at_most_one_post_a_second(
        make: Callable[..., TokenClient], fake: FakeIssuer, clock: ManualClock) -> None:
    client = make()

    def refusing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})

    async with httpx.AsyncClient(transport=httpx.MockTransport(refusing), auth=client.auth()) as http:
        for _ in range(20):
            assert (await http.get("http://inventory.test/items")).status_code == 401
        assert len(fake.posts) == 2  # the first token, and one replacement after the first 401
        clock.advance(1.5)
        await http.get("http://inventory.test/items")
        assert len(fake.posts) == 3


async def test_against_the_real_issuer(issuer: IssuerRuntime, clock: ManualClock) -> None:
    secret = await add_client(issuer, "orders", ["inventory"], ["inventory:read"], ttl=100)
    async with asgi_client(issuer) as http:
        client = TokenClient("http://issuer.test/token", "orders", secret, audience="inventory",
                             clock=clock, http=http)
        tokens = await asyncio.gather(*(client.token() for _ in range(20)))
        assert len(set(tokens)) == 1 and client.fetches == 1
        clock.advance(81)
        assert await client.token() == tokens[0]  # still valid: it serves while the refresh runs
        await _settled(client)
        assert await client.token() != tokens[0] and client.fetches == 2
        wrong = TokenClient("http://issuer.test/token", "orders", "khs_wrong", audience="inventory", http=http)
        with pytest.raises(InvalidClient):
            await wrong.token()

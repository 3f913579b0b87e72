"""Failed authentication is limited per client_id and per address, in Redis, shared by replicas."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from keyherald.issuer.runtime import IssuerRuntime
from keyherald.issuer.settings import IssuerSettings
from keyherald.shared.clock import ManualClock
from tests.tokenservice import add_client, asgi_client, basic, running_issuer

GRANT = {"grant_type": "client_credentials"}


@pytest.fixture
def limited_settings(issuer_settings: IssuerSettings) -> IssuerSettings:
    return issuer_settings.model_copy(update={"auth_failures_per_client": 3, "auth_failures_per_address": 6})


@pytest.fixture
async def issuer(limited_settings: IssuerSettings, clock: ManualClock) -> AsyncIterator[IssuerRuntime]:
    clock.now = 1_800_000_010.0  # 50 s left in the current one-minute window
    async with running_issuer(limited_settings, clock) as runtime:
        yield runtime


async def test_a_limited_client_gets_429_even_with_the_right_secret(issuer: IssuerRuntime,
                                                                     clock: ManualClock) -> None:
    secret = await add_client(issuer, "orders", ["inventory"])
    async with asgi_client(issuer) as http:
        for _ in range(3):
            response = await http.post("/token", data=GRANT, headers=basic("orders", "guess"))
            assert response.status_code == 401
        limited = await http.post("/token", data=GRANT, headers=basic("orders", secret))
        assert limited.status_code == 429
        assert limited.json()["error"] == "temporarily_unavailable"
        assert limited.headers["retry-after"] == "50"
        assert "access_token" not in limited.text
        clock.advance(50)  # the window passes
        assert (await http.post("/token", data=GRANT, headers=basic("orders", secret))).status_code == 200


async def test_failures_from_elsewhere_cannot_lock_a_client_out(issuer: IssuerRuntime) -> None:
    """client_ids are not secret (every token names its own): a stranger guessing at
    ``orders`` from another address locks out only itself."""
    secret = await add_client(issuer, "orders", ["inventory"])
    async with asgi_client(issuer, address="203.0.113.66") as attacker, asgi_client(issuer) as orders:
        for _ in range(3):
            assert (await attacker.post("/token", data=GRANT, headers=basic("orders", "guess"))).status_code == 401
        assert (await attacker.post("/token", data=GRANT, headers=basic("orders", secret))).status_code == 429
        assert (await orders.post("/token", data=GRANT, headers=basic("orders", secret))).status_code == 200


async def test_successes_are_not_counted(issuer: IssuerRuntime) -> None:
    secret = await add_client(issuer, "orders", ["inventory"])
    async with asgi_client(issuer) as http:
        for _ in range(10):
            assert (await http.post("/token", data=GRANT, headers=basic("orders", secret))).status_code == 200
        for _ in range(2):
            assert (await http.post("/token", data=GRANT, headers=basic("orders", "guess"))).status_code == 401
        assert (await http.post("/token", data=GRANT, headers=basic("orders", secret))).status_code == 200


async def test_one_address_varying_client_ids_is_limited_other_addresses_are_not(issuer: IssuerRuntime) -> None:
    secret = await add_client(issuer, "orders", ["inventory"])
    async with asgi_client(issuer, address="198.51.100.7") as attacker, asgi_client(issuer) as honest:
        for i in range(6):
            response = await attacker.post("/token", data=GRANT, headers=basic(f"guess-{i}", "x"))
            assert response.status_code == 401
        assert (await attacker.post("/token", data=GRANT, headers=basic("orders", secret))).status_code == 429
        assert (await honest.post("/token", data=GRANT, headers=basic("orders", secret))).status_code == 200


async def test_requests_without_credentials_count_against_the_address(issuer: IssuerRuntime) -> None:
    async with asgi_client(issuer, address="198.51.100.8") as http:
        for _ in range(6):
            assert (await http.post("/token", data=GRANT)).status_code == 401
        assert (await http.post("/token", data=GRANT)).status_code == 429


async def test_the_limit_is_shared_by_replicas_and_applies_to_revoke(issuer: IssuerRuntime, clock: ManualClock,
                                                                     limited_settings: IssuerSettings) -> None:
    secret = await add_client(issuer, "orders", ["inventory"])
    async with running_issuer(limited_settings, clock) as other:
        async with asgi_client(issuer) as first, asgi_client(other) as second:
            assert (await first.post("/token", data=GRANT, headers=basic("orders", "a"))).status_code == 401
            assert (await second.post("/token", data=GRANT, headers=basic("orders", "b"))).status_code == 401
            assert (await first.post("/revoke", data={"token": "x"}, headers=basic("orders", "c"))).status_code == 401
            assert (await second.post("/token", data=GRANT, headers=basic("orders", secret))).status_code == 429
            revoke = await first.post("/revoke", data={"token": "x"}, headers=basic("orders", secret))
            assert revoke.status_code == 429

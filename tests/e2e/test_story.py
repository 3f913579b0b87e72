"""The README story against a real server: orders calls inventory with a token; an operator
revokes orders; inventory refuses the next call.

The issuer serves real HTTP on a free port (the TokenClient talks to it over TCP); the two
example services run in process over ASGI; inventory's agent follows the real log.
The clock is frozen (ManualClock) so "the same second" is exact, not a race.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from examples.inventory import create_app as inventory_app
from examples.orders import create_app as orders_app
from keyherald.issuer.runtime import IssuerRuntime
from keyherald.issuer.settings import IssuerSettings
from keyherald.shared.clock import ManualClock
from keyherald.shared.jwk import ControlAlgorithm
from keyherald.verifier import VerifierAgent
from keyherald.verifier.client import TokenClient
from tests.tokenservice import agent, eventually, running_issuer

__all__ = ["agent"]  # a fixture, used by name

pytestmark = pytest.mark.redis


@pytest.fixture
def control_key_alg() -> ControlAlgorithm:
    """The default control key (RSA-3072, PS256): this module runs what deployments run."""
    return "PS256"


@pytest.fixture
async def issuer(issuer_settings: IssuerSettings, clock: ManualClock) -> AsyncIterator[IssuerRuntime]:
    settings = issuer_settings.model_copy(update={"http_port": 0})
    async with running_issuer(settings, clock, serve_http=True) as runtime:
        yield runtime


async def test_orders_calls_inventory_until_revoked(issuer: IssuerRuntime, agent: VerifierAgent,
                                                    clock: ManualClock) -> None:
    # keyherald clients create orders --audience inventory --scope inventory:read
    registry = issuer.ctx.clients()
    _, secret = await registry.create("orders", audiences=["inventory"], scopes=["inventory:read"])
    # keyherald clients create stranger --audience inventory  (no inventory:read)
    _, stranger_secret = await registry.create("stranger", audiences=["inventory"])

    token_url = f"http://127.0.0.1:{issuer.http_port}/token"
    inventory = inventory_app(agent)
    async with (
        TokenClient(token_url, "orders", secret, audience="inventory", scope="inventory:read", clock=clock) as tokens,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=inventory), base_url="http://inventory") as to_inventory,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=orders_app(tokens, to_inventory)),
                          base_url="http://orders") as orders,
    ):
        # 1. A call goes through: orders got a token, inventory verified it offline.
        response = await orders.get("/orders/check/widget")
        assert response.status_code == 200, response.text
        assert response.json() == {"sku": "widget", "in_stock": True, "available": 42}
        assert tokens.fetches == 1
        assert (await orders.get("/orders/check/gizmo")).json()["in_stock"] is False
        assert tokens.fetches == 1  # the token is cached

        health = (await to_inventory.get("/healthz")).json()  # exempt from tokens
        assert health["connected"] is True and health["stale"] is False and health["seq"] >= 4

        # Without a token, or without the scope, inventory says no (RFC 6750).
        assert (await to_inventory.get("/items/widget")).status_code == 401
        async with TokenClient(token_url, "stranger", stranger_secret, audience="inventory", clock=clock) as other:
            forbidden = await to_inventory.get("/items/widget", auth=other)
            assert forbidden.status_code == 403
            assert 'error="insufficient_scope"' in forbidden.headers["www-authenticate"]

        # 2. keyherald revoke subject orders
        seq = await issuer.admin.revoke_subject("orders")

        async def applied() -> bool:
            return agent.status().seq >= seq

        await eventually(applied, within=1.0)

        # 3. The next call is refused: the cached token is revoked, and so is the one orders
        #    fetched on the 401, issued in the same second as the revocation.
        refused = await orders.get("/orders/check/widget")
        assert refused.status_code == 502
        assert refused.json() == {"error": "inventory refused the call", "upstream_status": 401}
        assert tokens.fetches == 2

        # 4. A token fetched more than a second later is valid: revoking a subject cuts off
        #    what it holds, not the client. To lock it out: disable it, then revoke.
        clock.advance(2)
        assert (await orders.get("/orders/check/widget")).status_code == 200
        await registry.disable("orders")
        seq = await issuer.admin.revoke_subject("orders")
        await eventually(applied, within=1.0)
        clock.advance(2)
        locked_out = await orders.get("/orders/check/widget")
        assert locked_out.status_code == 502
        assert locked_out.json() == {"error": "orders cannot get a token", "reason": "unauthorized_client"}


def test_inventory_honours_keyherald_audience(monkeypatch: pytest.MonkeyPatch) -> None:
    """Walkthrough step 3 sets KEYHERALD_AUDIENCE; the example used to hard-code "inventory"."""
    monkeypatch.setenv("KEYHERALD_TRUST_ANCHOR", "A" * 43)
    monkeypatch.setenv("KEYHERALD_AUDIENCE", "stock,inventory")
    assert inventory_app().state.agent.settings.audience == ("stock", "inventory")
    monkeypatch.delenv("KEYHERALD_AUDIENCE")
    assert inventory_app().state.agent.settings.audience == ("inventory",)

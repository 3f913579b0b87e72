"""The token endpoint's express lane: it answers alone only the case it can decide from its
one read (a known client, its right secret, no limit, an unmoved log), or a policy refusal;
everything else goes to the endpoint's coroutine, which decides as it always did."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest

from keyherald.issuer.context import IssuerContext
from keyherald.issuer.http import Service, create_app
from keyherald.issuer.http.express import ExpressLane
from keyherald.issuer.http.oauth import Answer
from keyherald.issuer.http.token import Presented
from keyherald.issuer.runtime import IssuerRuntime
from keyherald.issuer.settings import IssuerSettings
from keyherald.shared.clock import ManualClock
from tests.tokenservice import add_client, running_issuer

pytestmark = pytest.mark.redis

FORM = b"grant_type=client_credentials"


@dataclass
class Outcome:
    answers: list[Answer] = field(default_factory=list)
    spawned: list[Coroutine[Any, Any, None]] = field(default_factory=list)

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        self.spawned.append(coroutine)


@pytest.fixture
async def issuer(issuer_settings: IssuerSettings, clock: ManualClock) -> AsyncIterator[IssuerRuntime]:
    settings = issuer_settings.model_copy(update={"auth_failures_per_client": 3})
    async with running_issuer(settings, clock) as runtime:
        yield runtime


@pytest.fixture
async def service(issuer: IssuerRuntime) -> Service:
    app: Any = create_app(issuer)
    await app.service.lookup("PING")  # connected: the lane can queue its read
    return app.service  # type: ignore[no-any-return]


async def ask(service: Service, client_id: str, secret: str, body: bytes = FORM) -> Outcome:
    """One request through the lane; a request it hands on is run to its answer too."""
    outcome = Outcome()
    basic = "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    presented = Presented(basic, "application/x-www-form-urlencoded", body, "192.0.2.10")
    ExpressLane(service)(presented, outcome.answers.append, outcome.spawn)
    for _ in range(500):
        if outcome.answers or outcome.spawned:
            break
        await asyncio.sleep(0.002)
    for coroutine in outcome.spawned:
        await coroutine
    assert len(outcome.answers) == 1
    return outcome


def status(outcome: Outcome) -> tuple[int, bool]:
    """The answer's status, and whether the lane answered alone."""
    return outcome.answers[0].status, not outcome.spawned


async def test_a_known_client_with_its_secret_is_answered_by_the_lane_alone(
    issuer: IssuerRuntime, service: Service
) -> None:
    secret = await add_client(issuer, "orders", ["inventory"], ["inventory:read"])
    assert status(await ask(service, "orders", secret)) == (200, False)  # the record is read once, by the coroutine
    done = await ask(service, "orders", secret)
    assert status(done) == (200, True)
    assert b'"access_token"' in done.answers[0].body and b'"scope":"inventory:read"' in done.answers[0].body
    refused = await ask(service, "orders", secret, FORM + b"&scope=inventory%3Awrite")
    assert status(refused) == (400, True) and b"invalid_scope" in refused.answers[0].body


async def test_everything_else_goes_to_the_coroutine_and_gets_its_answer(
    issuer: IssuerRuntime, service: Service
) -> None:
    secret = await add_client(issuer, "orders", ["inventory"])
    await ask(service, "orders", secret)
    assert status(await ask(service, "orders", "wrong")) == (401, False)
    assert status(await ask(service, "nobody", secret)) == (401, False)
    assert status(await ask(service, "orders", secret, b"grant_type=password")) == (400, False)
    assert status(await ask(service, "orders", secret, b"not a form")) == (400, False)
    async with IssuerContext(issuer.settings) as operator:  # another writer: this replica's state stays behind
        # The log moved (another client registered): the coroutine follows it, then serves.
        await operator.clients().create("billing", audiences=["ledger"])
        assert status(await ask(service, "orders", secret)) == (200, False)
        assert status(await ask(service, "orders", secret)) == (200, True)
        # A disabled client: refused by the coroutine, and served again once enabled.
        await operator.clients().disable("orders")
        assert status(await ask(service, "orders", secret)) == (400, False)
        await operator.clients().enable("orders")
        assert status(await ask(service, "orders", secret)) == (200, False)
    # A limit reached: refused by the coroutine.
    assert status(await ask(service, "orders", "wrong")) == (401, False)
    assert status(await ask(service, "orders", secret)) == (200, True)  # two failures: under the limit (3)
    assert status(await ask(service, "orders", "wrong")) == (401, False)
    assert status(await ask(service, "orders", secret)) == (429, False)


async def test_no_key_or_no_redis_connection_goes_to_the_coroutine(issuer: IssuerRuntime, service: Service,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    secret = await add_client(issuer, "orders", ["inventory"])
    await ask(service, "orders", secret)
    monkeypatch.setattr(issuer.signer, "sign_now", lambda payload: None)
    assert status(await ask(service, "orders", secret)) == (200, False)  # the coroutine found the key
    monkeypatch.undo()
    service.lookup.close()
    assert status(await ask(service, "orders", secret)) == (200, False)  # it connected again
    assert status(await ask(service, "orders", secret)) == (200, True)

"""FastStream: a token in a message header, checked before the handler runs (TestRedisBroker)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from faststream import Context
from faststream.exceptions import RejectMessage
from faststream.redis import RedisBroker, TestRedisBroker

from keyherald.verifier.integrations.faststream import TokenMiddleware
from keyherald.verifier.testing import TestIssuer


async def test_only_messages_with_a_valid_token_reach_the_handler(caplog: pytest.LogCaptureFixture) -> None:
    issuer = TestIssuer(audience="orders")
    agent = issuer.agent(audience="orders")
    broker = RedisBroker(middlewares=[TokenMiddleware(agent, scopes=["orders:write"])])
    seen: list[tuple[Any, str]] = []

    @broker.subscriber("orders")
    async def handle(body: dict[str, Any], claims: dict[str, Any] = Context("claims")) -> None:  # noqa: B008
        seen.append((body, claims["sub"]))

    good = issuer.mint(sub="billing", scope="orders:write")
    refused = [
        {},
        {"authorization": "Bearer junk"},
        {"authorization": issuer.mint(scope="orders:read")},
    ]
    with caplog.at_level(logging.INFO, logger="keyherald.verifier.auth"):
        async with TestRedisBroker(broker) as test_broker:
            await test_broker.publish({"n": 1}, "orders", headers={"authorization": f"Bearer {good}"})
            await test_broker.publish({"n": 2}, "orders", headers={"Authorization": good})
            for headers in refused:
                # The test broker surfaces the rejection; a real broker rejects the message.
                with pytest.raises(RejectMessage):
                    await test_broker.publish({"n": 3}, "orders", headers=headers)
    assert seen == [({"n": 1}, "billing"), ({"n": 2}, "billing")]
    logged = [r.getMessage() for r in caplog.records if r.name == "keyherald.verifier.auth"]
    assert logged == [
        "refused a message: missing", "refused a message: malformed", "refused a message: insufficient_scope",
    ]
    assert all(good not in r.getMessage() for r in caplog.records)

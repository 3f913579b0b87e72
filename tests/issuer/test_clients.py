"""The client registry against a real server: secrets stored only hashed, policy fields kept."""

from __future__ import annotations

import asyncio
import json

import pytest

from keyherald.issuer.clients import hash_secret, secret_matches
from keyherald.issuer.context import IssuerContext
from keyherald.issuer.errors import ClientExists, ClientNotFound
from keyherald.issuer.registry import ClientRegistry
from keyherald.shared.clock import ManualClock
from keyherald.shared.encoding import b64url_decode


@pytest.fixture
def registry(issuer_ctx: IssuerContext, clock: ManualClock) -> ClientRegistry:
    return issuer_ctx.clients()


async def test_secret_has_256_bits_and_only_a_salted_hash_is_stored(registry: ClientRegistry,
                                                                    issuer_ctx: IssuerContext) -> None:
    client, secret = await registry.create("orders", audiences=["inventory"], scopes=["inventory:read"], ttl=60)
    assert secret.startswith("khs_") and len(b64url_decode(secret.removeprefix("khs_"))) == 32
    raw = await issuer_ctx.redis.hget(issuer_ctx.names.clients, "orders")
    assert raw is not None and secret not in raw and secret.removeprefix("khs_") not in raw
    stored = json.loads(raw)
    assert stored["secret_hash"] == hash_secret(secret, bytes.fromhex(stored["secret_salt"]))
    assert "secret" not in client.public() and "secret_hash" not in client.public()
    assert secret not in repr(client)


async def test_same_secret_text_hashes_differently_per_client(registry: ClientRegistry) -> None:
    a, _ = await registry.create("a", audiences=["x"])
    b, _ = await registry.create("b", audiences=["x"])
    assert a.secret_salt != b.secret_salt


async def test_authenticate_accepts_only_the_current_secret(registry: ClientRegistry) -> None:
    _, secret = await registry.create("orders", audiences=["inventory"])
    assert await registry.authenticate("orders", secret) is not None
    assert await registry.authenticate("orders", secret[:-1]) is None
    assert await registry.authenticate("orders", "") is None
    assert await registry.authenticate("nobody", secret) is None
    _, new = await registry.rotate_secret("orders")
    assert await registry.authenticate("orders", secret) is None
    assert await registry.authenticate("orders", new) is not None
    assert not secret_matches(None, new)


async def test_fields_listing_and_lifecycle(registry: ClientRegistry, clock: ManualClock) -> None:
    await registry.create("zeta", audiences=["b", "a", "b"], scopes=["s1", "s2", "s1"], ttl=90)
    await registry.create("alpha", audiences=["a"])
    listed = await registry.list()
    assert [c.client_id for c in listed] == ["alpha", "zeta"]
    zeta = listed[1]
    assert zeta.audiences == ("b", "a") and zeta.scopes == ("s1", "s2") and zeta.ttl == 90
    assert zeta.created_at == int(clock()) and not zeta.disabled
    assert (await registry.disable("zeta")).disabled
    assert (await registry.get("zeta")).disabled  # type: ignore[union-attr]
    assert not (await registry.enable("zeta")).disabled
    await registry.delete("alpha")
    assert await registry.get("alpha") is None
    with pytest.raises(ClientNotFound):
        await registry.delete("alpha")
    with pytest.raises(ClientNotFound):
        await registry.rotate_secret("alpha")


async def test_names_are_unique_and_validated(registry: ClientRegistry) -> None:
    await registry.create("orders", audiences=["inventory"])
    with pytest.raises(ClientExists):
        await registry.create("orders", audiences=["other"])
    for bad in ("", "-x", "a b", "a:b", "x" * 65, "é"):
        with pytest.raises(ValueError, match="client name"):
            await registry.create(bad, audiences=["x"])
    with pytest.raises(ValueError, match="audience"):
        await registry.create("ok", audiences=[])
    with pytest.raises(ValueError, match="audience"):
        await registry.create("ok", audiences=["has space"])
    with pytest.raises(ValueError, match="scope"):
        await registry.create("ok", audiences=["x"], scopes=["a\\b"])
    with pytest.raises(ValueError, match="ttl"):
        await registry.create("ok", audiences=["x"], ttl=0)


async def test_concurrent_updates_lose_nothing(registry: ClientRegistry) -> None:
    await registry.create("orders", audiences=["inventory"])
    results = await asyncio.gather(*(registry.rotate_secret("orders") for _ in range(10)), registry.disable("orders"))
    final = await registry.get("orders")
    assert final is not None and final.disabled
    secrets_issued = [r.secret for r in results[:10]]  # type: ignore[union-attr]
    assert sum(secret_matches(final, s) for s in secrets_issued) == 1


async def test_records_written_to_redis_by_anyone_else_are_no_client(
    registry: ClientRegistry, issuer_ctx: IssuerContext
) -> None:
    """Every agent host can reach Redis: a record it writes must not become a client."""
    _, secret = await registry.create("orders", audiences=["inventory"], scopes=["inventory:read"])
    key = issuer_ctx.names.clients
    stored = json.loads(await issuer_ctx.redis.hget(key, "orders"))
    # Widen a real client's rights in place...
    widened = {**stored, "audiences": ["inventory", "https://issuer.test"], "scopes": ["keyherald:admin"]}
    await issuer_ctx.redis.hset(key, "orders", json.dumps(widened))
    assert await registry.get("orders") is None
    assert await registry.authenticate("orders", secret) is None
    # ...or plant a whole new one with a secret of the attacker's choosing.
    salt = "00" * 16
    planted = {**stored, "client_id": "evil", "secret_salt": salt, "mac": "",
               "secret_hash": hash_secret("khs_chosen", bytes.fromhex(salt))}
    await issuer_ctx.redis.hset(key, "evil", json.dumps(planted))
    assert await registry.authenticate("evil", "khs_chosen") is None
    assert [c.client_id for c in await registry.list()] == []
    # A record copied under another client_id fails too: the tag covers the id.
    await registry.create("billing", audiences=["inventory"])
    await issuer_ctx.redis.hset(key, "billing-copy", await issuer_ctx.redis.hget(key, "billing"))
    assert await registry.get("billing-copy") is None


async def test_an_old_record_put_back_brings_no_old_secret_back(
    registry: ClientRegistry, issuer_ctx: IssuerContext
) -> None:
    """The leaked-secret procedure, then the record from before it written back by someone
    who can write Redis: its tag is genuine, but it is not the record the log binds."""
    _, leaked = await registry.create("orders", audiences=["inventory"])
    key = issuer_ctx.names.clients
    saved = await issuer_ctx.redis.hget(key, "orders")
    _, _fresh = await registry.rotate_secret("orders")
    await registry.disable("orders")
    await issuer_ctx.redis.hset(key, "orders", saved)
    assert await registry.authenticate("orders", leaked) is None
    assert await registry.get("orders") is None
    # A deleted client's record put back is no client either.
    await registry.create("billing", audiences=["inventory"])
    billing = await issuer_ctx.redis.hget(key, "billing")
    await registry.delete("billing")
    await issuer_ctx.redis.hset(key, "billing", billing)
    assert await registry.get("billing") is None
    state = await issuer_ctx.log.read_state()
    assert state.client_record("billing") == "" and state.client_record("orders")

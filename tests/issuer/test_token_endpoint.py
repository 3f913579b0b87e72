"""POST /token against a real server: the client credentials flow, RFC 9068 tokens, policy,
and a token verified by PyJWT from /.well-known/jwks.json alone."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import jwt
import pytest

from keyherald.issuer.clients import Client, hash_secret, record_digest
from keyherald.issuer.context import IssuerContext
from keyherald.issuer.eventlog import Change
from keyherald.issuer.http.token import ClaimsTemplate, claims_for
from keyherald.issuer.runtime import IssuerRuntime
from keyherald.issuer.settings import IssuerSettings
from keyherald.shared.clock import ManualClock
from keyherald.shared.encoding import b64url_decode, dumps, loads_object
from keyherald.shared.events import EventType, KeyState
from keyherald.shared.state import State
from tests.tokenservice import add_client, basic, http, issuer

__all__ = ["http", "issuer"]


@pytest.fixture
def clock() -> ManualClock:
    # Real time, frozen: PyJWT checks nbf and exp against the wall clock.
    return ManualClock(float(int(time.time())))


def _parts(token: str) -> tuple[dict[str, object], dict[str, object]]:
    header, payload, _ = token.split(".")
    return loads_object(b64url_decode(header)), loads_object(b64url_decode(payload))


async def test_client_secret_basic_gets_an_rfc9068_token(issuer: IssuerRuntime, http: httpx.AsyncClient,
                                                         clock: ManualClock) -> None:
    secret = await add_client(issuer, "orders", ["inventory"], ["inventory:read", "inventory:write"], ttl=120)
    response = await http.post("/token", data={"grant_type": "client_credentials"}, headers=basic("orders", secret))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 120
    assert body["scope"] == "inventory:read inventory:write"
    header, claims = _parts(body["access_token"])
    state = await issuer.ctx.log.read_state()
    assert state.active_key is not None
    assert header == {"alg": "ES256", "kid": state.active_key.kid, "typ": "at+jwt"}
    now = int(clock())
    assert claims["iss"] == "https://issuer.test"
    assert claims["sub"] == claims["client_id"] == "orders"
    assert claims["aud"] == "inventory"
    assert claims["iat"] == claims["nbf"] == now
    assert claims["exp"] == now + 120
    assert claims["scope"] == "inventory:read inventory:write"
    assert isinstance(claims["jti"], str) and len(b64url_decode(claims["jti"])) == 16


async def test_client_secret_post_works_and_each_token_has_its_own_jti(issuer: IssuerRuntime,
                                                                       http: httpx.AsyncClient) -> None:
    secret = await add_client(issuer, "billing", ["ledger"])
    form = {"grant_type": "client_credentials", "client_id": "billing", "client_secret": secret}
    first = await http.post("/token", data=form)
    second = await http.post("/token", data=form)
    assert first.status_code == second.status_code == 200
    assert _parts(first.json()["access_token"])[1]["jti"] != _parts(second.json()["access_token"])[1]["jti"]
    # No scopes registered: no scope claim, an empty scope in the response.
    assert "scope" not in _parts(first.json()["access_token"])[1]
    assert first.json()["scope"] == ""


async def test_lifetime_is_capped_by_the_issuer_token_ttl(issuer: IssuerRuntime, http: httpx.AsyncClient) -> None:
    secret = await add_client(issuer, "slow", ["inventory"], ttl=86400)
    response = await http.post("/token", data={"grant_type": "client_credentials"}, headers=basic("slow", secret))
    assert response.json()["expires_in"] == 300  # issuer_settings token_ttl = 5m
    _, claims = _parts(response.json()["access_token"])
    assert claims["exp"] - claims["iat"] == 300


async def test_scope_subset_and_audience_choice(issuer: IssuerRuntime, http: httpx.AsyncClient) -> None:
    secret = await add_client(issuer, "orders", ["inventory", "payments"], ["a", "b"])
    auth = basic("orders", secret)
    response = await http.post(
        "/token", data={"grant_type": "client_credentials", "audience": "payments", "scope": "b"}, headers=auth
    )
    assert response.status_code == 200
    _, claims = _parts(response.json()["access_token"])
    assert claims["aud"] == "payments" and claims["scope"] == "b"
    both = await http.post(
        "/token", headers=auth,
        data={"grant_type": "client_credentials", "audience": "inventory", "resource": "payments"},
    )
    assert both.status_code == 200
    assert _parts(both.json()["access_token"])[1]["aud"] == ["inventory", "payments"]


async def test_audience_not_registered_is_invalid_target(issuer: IssuerRuntime, http: httpx.AsyncClient) -> None:
    secret = await add_client(issuer, "orders", ["inventory"], ["a"])
    auth = basic("orders", secret)
    for data in ({"audience": "payments"}, {"resource": "payments"}, {"audience": ["inventory", "payments"]}):
        response = await http.post("/token", data={"grant_type": "client_credentials", **data}, headers=auth)
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_target"


async def test_scope_not_registered_is_invalid_scope_never_narrowed(issuer: IssuerRuntime,
                                                                    http: httpx.AsyncClient) -> None:
    secret = await add_client(issuer, "orders", ["inventory"], ["inventory:read"])
    auth = basic("orders", secret)
    for scope in ("inventory:read inventory:write", "admin", "inventory:read  x", ""):
        response = await http.post("/token", data={"grant_type": "client_credentials", "scope": scope}, headers=auth)
        assert response.status_code == 400, scope
        assert response.json()["error"] == "invalid_scope"
        assert "access_token" not in response.json()


async def test_several_audiences_and_none_named_is_invalid_request(issuer: IssuerRuntime,
                                                                   http: httpx.AsyncClient) -> None:
    secret = await add_client(issuer, "orders", ["inventory", "payments"])
    response = await http.post("/token", data={"grant_type": "client_credentials"}, headers=basic("orders", secret))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_disabled_client_is_refused_and_rotate_secret_kills_the_old_one(issuer: IssuerRuntime,
                                                                             http: httpx.AsyncClient) -> None:
    old = await add_client(issuer, "orders", ["inventory"])
    registry = issuer.ctx.clients()
    _, new = await registry.rotate_secret("orders")
    form = {"grant_type": "client_credentials"}
    refused = await http.post("/token", data=form, headers=basic("orders", old))
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    assert (await http.post("/token", data=form, headers=basic("orders", new))).status_code == 200
    await registry.disable("orders")
    disabled = await http.post("/token", data=form, headers=basic("orders", new))
    assert disabled.status_code == 400
    assert disabled.json()["error"] == "unauthorized_client"
    await registry.enable("orders")
    assert (await http.post("/token", data=form, headers=basic("orders", new))).status_code == 200


async def test_a_token_verifies_with_pyjwt_from_the_jwks_alone(issuer: IssuerRuntime,
                                                               http: httpx.AsyncClient) -> None:
    secret = await add_client(issuer, "orders", ["inventory"], ["inventory:read"])
    token = (await http.post(
        "/token", data={"grant_type": "client_credentials"}, headers=basic("orders", secret)
    )).json()["access_token"]
    jwks = await http.get("/.well-known/jwks.json")
    assert jwks.status_code == 200
    jwk_set = jwt.PyJWKSet.from_dict(jwks.json())
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwk_set.keys if k.key_id == kid)
    claims = jwt.decode(
        token, key=key, algorithms=["ES256"], audience="inventory", issuer="https://issuer.test",
        options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
    )
    assert claims["sub"] == "orders" and claims["scope"] == "inventory:read"
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(token, key=key, algorithms=["ES256"], audience="payments", issuer="https://issuer.test")


async def test_a_burst_larger_than_the_redis_pool_is_served_not_refused(issuer: IssuerRuntime,
                                                                        http: httpx.AsyncClient) -> None:
    # redis-py's pool refuses a 101st connection instead of queueing: the endpoint must queue.
    secret = await add_client(issuer, "orders", ["inventory"])
    responses = await asyncio.gather(*(
        http.post("/token", data={"grant_type": "client_credentials"}, headers=basic("orders", secret))
        for _ in range(150)
    ))
    assert [r.status_code for r in responses] == [200] * 150


async def test_jwks_holds_what_verifiers_need_and_never_a_revoked_key(issuer: IssuerRuntime,
                                                                      http: httpx.AsyncClient,
                                                                      clock: ManualClock) -> None:
    state = await issuer.ctx.log.read_state()
    active, standby = state.active_key, state.keys_in(KeyState.PUBLISHED)[0]
    assert active is not None
    response = await http.get("/.well-known/jwks.json")
    assert response.headers["content-type"].startswith("application/jwk-set+json")
    assert {k["kid"] for k in response.json()["keys"]} == {active.kid, standby.kid}
    assert all(k["use"] == "sig" and k["alg"] == "ES256" and "d" not in k for k in response.json()["keys"])
    # The standby activates in 60 s (rotation_period): the copy is good until then.
    assert response.headers["cache-control"] == "public, max-age=60, stale-if-error=300"
    clock.advance(45)
    assert (await http.get("/.well-known/jwks.json")).headers["cache-control"].startswith("public, max-age=15,")

    await issuer.admin.rotate()  # the old key retires: still served, its tokens are valid
    retired = (await http.get("/.well-known/jwks.json")).json()["keys"]
    assert active.kid in {k["kid"] for k in retired} and len(retired) == 3
    await issuer.admin.revoke_key(active.kid)
    revoked = (await http.get("/.well-known/jwks.json")).json()["keys"]
    assert active.kid not in {k["kid"] for k in revoked}


async def test_rfc8414_metadata_and_openapi(http: httpx.AsyncClient) -> None:
    meta = (await http.get("/.well-known/oauth-authorization-server")).json()
    assert meta["issuer"] == "https://issuer.test"
    assert meta["token_endpoint"] == "https://issuer.test/token"
    assert meta["jwks_uri"] == "https://issuer.test/.well-known/jwks.json"
    assert meta["revocation_endpoint"] == "https://issuer.test/revoke"
    assert meta["grant_types_supported"] == ["client_credentials"]
    assert meta["token_endpoint_auth_methods_supported"] == ["client_secret_basic", "client_secret_post"]
    spec = (await http.get("/openapi.json")).json()
    token = spec["paths"]["/token"]["post"]
    assert "application/x-www-form-urlencoded" in token["requestBody"]["content"]
    assert {"/revoke", "/admin/revoke/subject", "/.well-known/jwks.json", "/healthz"} <= set(spec["paths"])


async def test_healthz_reports_role_redis_and_seq(issuer: IssuerRuntime, http: httpx.AsyncClient) -> None:
    body = (await http.get("/healthz")).json()
    state = issuer.ctx.log.state
    assert state is not None
    assert body == {"role": "leader", "redis": True, "seq": issuer.seq, "log": state.log, "ok": True}
    assert issuer.seq >= 5


async def test_a_burst_of_jwks_requests_is_served_not_refused(http: httpx.AsyncClient) -> None:
    responses = await asyncio.gather(*(http.get("/.well-known/jwks.json") for _ in range(150)))
    assert [r.status_code for r in responses] == [200] * 150


async def test_jwks_keeps_answering_from_memory_while_redis_is_unreachable(
        issuer: IssuerRuntime, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain JWT verifiers must not lose the keys of still-valid tokens in an outage."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    before = (await http.get("/.well-known/jwks.json")).json()

    async def unreachable() -> None:
        raise RedisConnectionError("injected outage")

    monkeypatch.setattr(issuer.ctx.log, "read_state", unreachable)
    during = await http.get("/.well-known/jwks.json")
    assert during.status_code == 200 and during.json() == before
    token = await http.post("/token", data={"grant_type": "client_credentials"}, headers=basic("x", "y"))
    assert token.status_code in (401, 503) and "Traceback" not in token.text


async def test_a_change_by_another_writer_is_refused_on_the_next_request(
    issuer: IssuerRuntime, http: httpx.AsyncClient, issuer_settings: IssuerSettings
) -> None:
    """The operator's command is another writer: whatever this replica holds in memory (the
    record it checked for earlier tokens), the next request sees the rotation or the disable."""
    old = await add_client(issuer, "orders", ["inventory"])
    form = {"grant_type": "client_credentials"}
    assert (await http.post("/token", data=form, headers=basic("orders", old))).status_code == 200
    async with IssuerContext(issuer_settings) as operator:
        _, new = await operator.clients().rotate_secret("orders")
        refused = await http.post("/token", data=form, headers=basic("orders", old))
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
        assert (await http.post("/token", data=form, headers=basic("orders", new))).status_code == 200
        await operator.clients().disable("orders")
        disabled = await http.post("/token", data=form, headers=basic("orders", new))
        assert disabled.status_code == 400 and disabled.json()["error"] == "unauthorized_client"
        await operator.clients().delete("orders")
        gone = await http.post("/token", data=form, headers=basic("orders", new))
        assert gone.status_code == 401 and gone.json()["error"] == "invalid_client"


async def test_a_record_the_log_binds_is_still_refused_without_its_seal(
    issuer: IssuerRuntime, http: httpx.AsyncClient
) -> None:
    """The seal is checked on its own: even a record whose digest the signed log binds (as
    if the log itself were forged) is no client unless its HMAC verifies."""
    secret = await add_client(issuer, "orders", ["inventory"])
    key = issuer.ctx.names.clients
    stored = json.loads(await issuer.ctx.redis.hget(key, "orders"))
    salt = "00" * 16
    forged = json.dumps({**stored, "client_id": "evil", "secret_salt": salt, "mac": "0" * 64,
                         "secret_hash": hash_secret("khs_chosen", bytes.fromhex(salt))})

    async def bind(state: State, now: float) -> Change:
        draft = (str(EventType.CLIENT_UPDATED), {"client_id": "evil", "record": record_digest(forged)})
        return Change([draft], {"evil": forged})

    await issuer.ctx.log.commit(bind)
    form = {"grant_type": "client_credentials"}
    refused = await http.post("/token", data=form, headers=basic("evil", "khs_chosen"))
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    assert (await http.post("/token", data=form, headers=basic("orders", secret))).status_code == 200


@pytest.mark.parametrize(("audiences", "scopes", "ttl"), [
    (["inventory"], ["inventory:read"], None),
    (["a%b", "ünïcode", "https://x.test/p?q"], ["x:read", "100%"], 60),
    (["inventory"], [], 86400),
])
def test_a_claims_template_writes_what_the_signer_would(audiences: list[str], scopes: list[str],
                                                        ttl: int | None) -> None:
    """Each token's claims come from a template made once per client and request shape: the
    JSON must be byte for byte what the canonical encoder writes for the same claims."""
    client = Client(client_id="orders", audiences=tuple(audiences), scopes=tuple(scopes), ttl=ttl, created_at=0,
                    secret_salt="00", secret_hash="00", secret_rotated_at=0)
    template = ClaimsTemplate(client, audiences, scopes, issuer="https://issuer.test", max_ttl=300)
    payload = template.payload(1_800_000_000.9)
    claims = loads_object(payload)
    assert dumps(claims).decode() == payload
    assert claims["iat"] == claims["nbf"] == 1_800_000_000 and claims["exp"] - claims["iat"] == min(ttl or 300, 300)
    expected = claims_for(client, audiences, scopes, issuer="https://issuer.test", now=1_800_000_000, max_ttl=300)
    assert {**claims, "jti": None} == {**expected, "jti": None}
    answer = json.loads(template.answer % "a.b.c")
    assert answer == {"access_token": "a.b.c", "token_type": "Bearer", "expires_in": claims["exp"] - claims["iat"],
                      "scope": " ".join(scopes)}

"""Revocation on demand: RFC 7009 by a client, the admin API (tokens checked by the issuer's own
agent, RFC 6750 answers), and revocation of a token, a subject and a key reaching a running
agent within a second."""

from __future__ import annotations

import httpx
import pytest

from keyherald.issuer.runtime import IssuerRuntime
from keyherald.issuer.settings import IssuerSettings
from keyherald.shared.clock import ManualClock
from keyherald.verifier import InvalidToken, KeyRevoked, TokenRevoked, VerifierAgent
from tests.tokenservice import add_client, agent, basic, eventually, http, issuer

__all__ = ["agent", "http", "issuer"]

GRANT = {"grant_type": "client_credentials"}


async def _token(http: httpx.AsyncClient, client_id: str, secret: str, **form: str) -> str:
    response = await http.post("/token", data={**GRANT, **form}, headers=basic(client_id, secret))
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


@pytest.fixture
async def admin_headers(issuer: IssuerRuntime, http: httpx.AsyncClient) -> dict[str, str]:
    secret = await add_client(issuer, "ops", [issuer.settings.issuer], [issuer.settings.admin_scope])
    await eventually(lambda: _ready(issuer), within=5)
    return {"Authorization": f"Bearer {await _token(http, 'ops', secret)}"}


async def _ready(runtime: IssuerRuntime) -> bool:
    return runtime.agent is not None


def _refused(agent: VerifierAgent, token: str, kind: type[InvalidToken]) -> bool:
    try:
        agent.verify(token)
    except kind:
        return True
    return False


async def test_rfc7009_a_client_revokes_its_own_token(issuer: IssuerRuntime, http: httpx.AsyncClient,
                                                     agent: VerifierAgent) -> None:
    secret = await add_client(issuer, "orders", ["inventory"])
    token = await _token(http, "orders", secret)
    claims = agent.verify(token)
    response = await http.post("/revoke", data={"token": token, "token_type_hint": "access_token"},
                               headers=basic("orders", secret))
    assert response.status_code == 200 and response.content == b""
    state = await issuer.ctx.log.read_state()
    assert state.revoked_tokens[claims["jti"]] == claims["exp"]

    async def applied() -> bool:
        return _refused(agent, token, TokenRevoked)

    await eventually(applied, within=1.0)


async def test_rfc7009_a_disabled_client_may_still_revoke_its_own_tokens(
        issuer: IssuerRuntime, http: httpx.AsyncClient, agent: VerifierAgent) -> None:
    """After a leak the client is disabled first; its owner must still be able to clean up.
    A wrong secret is still refused, and the disabled client still gets no new token."""
    secret = await add_client(issuer, "orders", ["inventory"])
    token = await _token(http, "orders", secret)
    await issuer.ctx.clients().disable("orders")
    assert (await http.post("/token", data=GRANT, headers=basic("orders", secret))).status_code == 400
    wrong = await http.post("/revoke", data={"token": token}, headers=basic("orders", "khs_guess"))
    assert wrong.status_code == 401
    response = await http.post("/revoke", data={"token": token}, headers=basic("orders", secret))
    assert response.status_code == 200
    await eventually(lambda: _async(_refused(agent, token, TokenRevoked)), within=1.0)


async def test_rfc7009_other_clients_tokens_and_garbage_get_200_and_change_nothing(
        issuer: IssuerRuntime, http: httpx.AsyncClient, agent: VerifierAgent) -> None:
    orders = await add_client(issuer, "orders", ["inventory"])
    thief = await add_client(issuer, "thief", ["inventory"])
    token = await _token(http, "orders", orders)
    before = await issuer.ctx.log.read_state()
    for data in ({"token": token}, {"token": "garbage"}, {"token": token[:-4] + "AAAA"},
                 {"token": token, "token_type_hint": "refresh_token"}):
        response = await http.post("/revoke", data=data, headers=basic("thief", thief))
        assert response.status_code == 200
    after = await issuer.ctx.log.read_state()  # heartbeats may have ticked: compare what they revoke
    assert (after.revoked_tokens, after.revoked_subjects) == (before.revoked_tokens, before.revoked_subjects)
    agent.verify(token)
    missing = await http.post("/revoke", data={}, headers=basic("orders", orders))
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
    anonymous = await http.post("/revoke", data={"token": token})
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "invalid_client"


async def test_admin_api_answers_per_rfc6750(issuer: IssuerRuntime, http: httpx.AsyncClient,
                                            admin_headers: dict[str, str]) -> None:
    none = await http.get("/admin/keys")
    assert none.status_code == 401
    assert none.headers["www-authenticate"] == 'Bearer realm="keyherald"'
    bad = await http.get("/admin/keys", headers={"Authorization": "Bearer not.a.token"})
    assert bad.status_code == 401
    assert 'error="invalid_token"' in bad.headers["www-authenticate"]
    assert "not.a.token" not in bad.text
    # A valid token for another audience is not an admin token.
    secret = await add_client(issuer, "orders", ["inventory"], ["keyherald:admin"])
    wrong_aud = await _token(http, "orders", secret)
    assert (await http.get("/admin/keys", headers={"Authorization": f"Bearer {wrong_aud}"})).status_code == 401
    # The right audience without the admin scope is forbidden.
    plain = await add_client(issuer, "viewer", [issuer.settings.issuer], ["read"])
    weak = await _token(http, "viewer", plain)
    forbidden = await http.get("/admin/keys", headers={"Authorization": f"Bearer {weak}"})
    assert forbidden.status_code == 403
    assert 'error="insufficient_scope"' in forbidden.headers["www-authenticate"]
    assert 'scope="keyherald:admin"' in forbidden.headers["www-authenticate"]
    keys = await http.get("/admin/keys", headers=admin_headers)
    assert keys.status_code == 200
    assert sorted(k["state"] for k in keys.json()) == ["active", "published"]


async def test_admin_api_manages_clients(issuer: IssuerRuntime, http: httpx.AsyncClient,
                                         admin_headers: dict[str, str]) -> None:
    created = await http.post("/admin/clients", headers=admin_headers,
                              json={"name": "orders", "audiences": ["inventory"], "scopes": ["r"]})
    assert created.status_code == 201
    secret = created.json()["client_secret"]
    assert (await http.post("/admin/clients", headers=admin_headers,
                            json={"name": "orders", "audiences": ["x"]})).status_code == 409
    listed = (await http.get("/admin/clients", headers=admin_headers)).json()
    assert "orders" in [c["client_id"] for c in listed] and secret not in str(listed)
    await _token(http, "orders", secret)
    rotated = await http.post("/admin/clients/orders/rotate-secret", headers=admin_headers)
    new = rotated.json()["client_secret"]
    assert (await http.post("/token", data=GRANT, headers=basic("orders", secret))).status_code == 401
    await _token(http, "orders", new)
    assert (await http.post("/admin/clients/orders/disable", headers=admin_headers)).json()["disabled"]
    assert (await http.post("/token", data=GRANT, headers=basic("orders", new))).status_code == 400
    assert not (await http.post("/admin/clients/orders/enable", headers=admin_headers)).json()["disabled"]
    await _token(http, "orders", new)
    assert (await http.post("/admin/clients/nobody/disable", headers=admin_headers)).status_code == 404


async def test_revoking_a_token_a_subject_and_a_key_reaches_the_agent_within_a_second(
        issuer: IssuerRuntime, http: httpx.AsyncClient, agent: VerifierAgent, admin_headers: dict[str, str],
        clock: ManualClock) -> None:
    secret = await add_client(issuer, "orders", ["inventory"])
    one, two = await _token(http, "orders", secret), await _token(http, "orders", secret)
    agent.verify(one), agent.verify(two)

    claims = agent.verify(one)
    response = await http.post("/admin/revoke/token", headers=admin_headers, json={"token": one})
    assert response.status_code == 200 and response.json()["jti"] == claims["jti"]
    await eventually(lambda: _async(_refused(agent, one, TokenRevoked)), within=1.0)
    agent.verify(two)

    response = await http.post("/admin/revoke/subject", headers=admin_headers, json={"sub": "orders"})
    assert response.status_code == 200 and response.json()["seq"] > 0
    await eventually(lambda: _async(_refused(agent, two, TokenRevoked)), within=1.0)
    clock.advance(2)  # a token fetched more than a second after the revocation is valid
    three = await _token(http, "orders", secret)
    await eventually(lambda: _async(_accepted(agent, three)), within=1.0)

    assert (await http.post("/admin/revoke/key", headers=admin_headers, json={"kid": "nope"})).status_code == 404
    kid = (await issuer.ctx.log.read_state()).active_key.kid  # type: ignore[union-attr]
    response = await http.post("/admin/revoke/key", headers=admin_headers, json={"kid": kid})
    assert response.status_code == 200
    await eventually(lambda: _async(_refused(agent, three, KeyRevoked)), within=1.0)
    # The admin token was signed by that key too: the issuer's own agent refuses it now.
    await eventually(lambda: _status(http, admin_headers, 401), within=1.0)

    async def signs_with_the_new_key() -> bool:
        await issuer.signer.refresh()
        return _accepted(agent, await _token(http, "orders", secret))

    await eventually(signs_with_the_new_key, within=1.0)


async def test_admin_rotate_and_revoke_by_jti(issuer: IssuerRuntime, http: httpx.AsyncClient,
                                              admin_headers: dict[str, str]) -> None:
    before = (await issuer.ctx.log.read_state()).active_key
    rotated = await http.post("/admin/keys/rotate", headers=admin_headers, json={})
    assert rotated.status_code == 200
    after = (await issuer.ctx.log.read_state()).active_key
    assert before is not None and after is not None and after.kid != before.kid
    response = await http.post("/admin/revoke/token", headers=admin_headers,
                               json={"jti": "abc", "expires_at": 1_900_000_000})
    assert response.status_code == 200
    # remembered until no token can still need it: now + the token TTL (5 m), not 2030
    assert (await issuer.ctx.log.read_state()).revoked_tokens["abc"] == int(issuer.clock()) + 300
    incomplete = await http.post("/admin/revoke/token", headers=admin_headers, json={"jti": "abc"})
    assert incomplete.status_code == 400


def _accepted(agent: VerifierAgent, token: str) -> bool:
    try:
        agent.verify(token)
    except InvalidToken:
        return False
    return True


async def _status(http: httpx.AsyncClient, headers: dict[str, str], status: int) -> bool:
    return (await http.get("/admin/keys", headers=headers)).status_code == status


async def _async(value: bool) -> bool:
    return value


async def test_rfc7009_revocations_per_client_are_budgeted(issuer_settings: IssuerSettings,
                                                          clock: ManualClock) -> None:
    """Each revocation lives in every agent until its token expires: one client may not grow
    everyone's state without bound by minting and revoking in a loop."""
    from tests.tokenservice import asgi_client, running_issuer

    settings = issuer_settings.model_copy(update={"revocations_per_client": 3})
    async with running_issuer(settings, clock) as runtime, asgi_client(runtime) as client:
        secret = await add_client(runtime, "orders", ["inventory"])
        answers = []
        for _ in range(4):
            token = await _token(client, "orders", secret)
            response = await client.post("/revoke", data={"token": token}, headers=basic("orders", secret))
            answers.append(response.status_code)
        assert answers == [200, 200, 200, 429]
        assert 1 <= int(response.headers["Retry-After"]) <= 60
        assert response.json()["error"] == "temporarily_unavailable"
        assert len((await runtime.ctx.log.read_state()).revoked_tokens) == 3
        clock.advance(60)  # the next minute's budget
        token = await _token(client, "orders", secret)
        response = await client.post("/revoke", data={"token": token}, headers=basic("orders", secret))
        assert response.status_code == 200


async def test_admin_bodies_are_checked_after_the_token_and_never_echoed(
        http: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    broken = b"{bad json"
    anonymous = await http.post("/admin/revoke/subject", content=broken,
                                headers={"Content-Type": "application/json"})
    assert anonymous.status_code == 401 and "detail" not in anonymous.text
    echoed = await http.post("/admin/revoke/token", json={"token": 12345678901234567890},
                             headers=admin_headers)
    assert echoed.status_code == 400 and echoed.json()["error"] == "invalid_request"
    assert "12345678901234567890" not in echoed.text and "detail" not in echoed.text


async def test_admin_bulk_revocation_reaches_the_agent_all_or_nothing(
    issuer: IssuerRuntime, http: httpx.AsyncClient, admin_headers: dict[str, str], agent: VerifierAgent
) -> None:
    """An incident: 20,000 jtis in one request (well over the 16 KiB of other admin bodies);
    the agent counts every one. One bad entry in a request: nothing of it is revoked."""
    now = int(issuer.clock())
    before = agent.status().revoked_tokens
    bad = await http.post("/admin/revoke/tokens", headers=admin_headers,
                          json={"tokens": [{"jti": "fine", "expires_at": now + 60}, {"jti": "", "expires_at": now}]})
    assert bad.status_code == 400 and "fine" not in (await issuer.ctx.log.read_state()).revoked_tokens
    tokens = [{"jti": f"incident-{i}", "expires_at": now + 120} for i in range(20_000)]
    response = await http.post("/admin/revoke/tokens", headers=admin_headers,
                               json={"tokens": [*tokens, {"jti": "long-gone", "expires_at": now - 10}]})
    assert response.status_code == 200, response.text
    assert response.json()["revoked"] == 20_000 and response.json()["expired"] == 1
    await eventually(lambda: _async(agent.status().revoked_tokens == before + 20_000), within=5.0)
    assert "incident-19999" in agent.keys.state.revoked_tokens and "long-gone" not in agent.keys.state.revoked_tokens

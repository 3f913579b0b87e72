"""The console's sessions and guards, in process (the browser tests are tests/e2e/test_console.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from keyherald.issuer.http import create_app
from keyherald.issuer.http.console.sessions import _digest
from keyherald.issuer.http.console.timeline import timeline
from keyherald.issuer.runtime import IssuerRuntime
from keyherald.issuer.settings import IssuerSettings
from keyherald.shared.clock import ManualClock
from tests.tokenservice import add_client, eventually, running_issuer

pytestmark = pytest.mark.redis

BASE = "https://issuer.test"  # the issuer_settings' issuer: https, so the cookie is Secure
COOKIE = "__Host-keyherald_console"


@pytest.fixture
async def issuer(issuer_settings: IssuerSettings, clock: ManualClock) -> AsyncIterator[IssuerRuntime]:
    async with running_issuer(issuer_settings, clock) as runtime:
        await eventually(lambda: _async(runtime.agent is not None), within=10)
        yield runtime


async def _async(value: bool) -> bool:
    return value


def _http(runtime: IssuerRuntime) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(runtime), client=("127.0.0.1", 40000))
    return httpx.AsyncClient(transport=transport, base_url=BASE, headers={"Origin": BASE})


async def _admin(runtime: IssuerRuntime) -> str:
    return await add_client(runtime, "ops", [runtime.settings.issuer], [runtime.settings.admin_scope])


async def _signed_in(http: httpx.AsyncClient, client_id: str, secret: str) -> httpx.Response:
    answer = await http.post("/console/signin", data={"client_id": client_id, "client_secret": secret})
    assert answer.status_code == 303 and answer.headers["location"] == "/console", answer.text
    return answer


async def test_signing_in_sets_a_strict_cookie_and_every_page_carries_the_headers(issuer: IssuerRuntime) -> None:
    secret = await _admin(issuer)
    async with _http(issuer) as http:
        cookie = (await _signed_in(http, "ops", secret)).headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "Secure" in cookie
        assert "samesite=strict" in cookie.lower() and "Path=/;" in cookie and "Max-Age" not in cookie
        page = await http.get("/console")
        assert page.status_code == 200 and "Signing now" in page.text
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert page.headers["cache-control"] == "no-store" and page.headers["x-frame-options"] == "DENY"
        script = await http.get("/console/static/console.js")
        assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
        assert (await http.get("/console/static/..%2Fsessions.py")).status_code == 404
    # Redis holds the hash of the session id, never the id.
    session_id = http.cookies[COOKIE]
    keys = [k async for k in issuer.ctx.redis.scan_iter(match=f"{{{issuer.ctx.names.namespace}}}:console:*")]
    assert keys == [issuer.ctx.names.console_session(_digest(session_id))]
    assert session_id not in await issuer.ctx.redis.get(keys[0])


async def test_a_session_record_written_into_redis_is_no_session(issuer: IssuerRuntime) -> None:
    """Whoever can write Redis cannot make a console session (it would sign events)."""
    names = issuer.ctx.names
    now = issuer.clock()
    record = {"principal": "ops", "kind": "client", "csrf": "c", "created": now, "seen": now,
              "expires": now + 3600, "jti": "", "mac": "0" * 64}
    await issuer.ctx.redis.set(names.console_session(_digest("forged-id")), json.dumps(record))
    async with _http(issuer) as http:
        http.cookies.set(COOKIE, "forged-id")
        answer = await http.get("/console")
        assert answer.status_code == 303 and answer.headers["location"] == "/console/signin"
        assert (await http.get("/console/api/live")).status_code == 401


async def test_a_session_ends_when_idle_and_when_its_holder_loses_the_admin_scope(
    issuer: IssuerRuntime, clock: ManualClock
) -> None:
    secret = await _admin(issuer)
    async with _http(issuer) as http:
        await _signed_in(http, "ops", secret)
        clock.now += issuer.settings.console_idle_timeout - 5
        assert (await http.get("/console/events")).status_code == 200  # used: the idle clock restarts
        clock.now += issuer.settings.console_idle_timeout - 5
        assert (await http.get("/console/events")).status_code == 200
        clock.now += issuer.settings.console_idle_timeout + 1
        assert (await http.get("/console/events")).status_code == 303
        await _signed_in(http, "ops", secret)
        await issuer.ctx.clients().disable("ops")
        assert (await http.get("/console")).status_code == 303
        await issuer.ctx.clients().enable("ops")
        assert (await http.get("/console")).status_code == 303  # that session is gone for good
        await _signed_in(http, "ops", secret)
        await issuer.admin.revoke_subject("ops")
        assert (await http.get("/console")).status_code == 303


async def test_rotating_the_secret_or_revoking_the_token_key_ends_the_sessions_opened_with_them(
    issuer: IssuerRuntime,
) -> None:
    """A leaked admin secret, rotated: the session its thief opened ends with it (as the old
    secret's tokens do). A session opened with an admin token ends when its key is revoked."""
    secret = await _admin(issuer)
    async with _http(issuer) as thief, _http(issuer) as holder:
        await _signed_in(thief, "ops", secret)
        assert (await thief.get("/console")).status_code == 200
        new_secret = (await issuer.ctx.clients().rotate_secret("ops")).secret
        assert (await thief.get("/console")).status_code == 303
        await _signed_in(holder, "ops", new_secret)
        assert (await holder.get("/console")).status_code == 200
        grant = {"grant_type": "client_credentials", "audience": issuer.settings.issuer,
                 "scope": issuer.settings.admin_scope}
        token = (await holder.post("/token", data=grant, auth=("ops", new_secret))).json()["access_token"]
    async with _http(issuer) as by_token:
        assert (await by_token.post("/console/signin", data={"token": token})).status_code == 303
        assert (await by_token.get("/console")).status_code == 200
        state = await issuer.ctx.log.read_state()
        signing = next(kid for kid, key in state.keys.items() if key.state.value == "active")
        await issuer.admin.revoke_key(signing)
        assert (await by_token.get("/console")).status_code == 303


async def test_numbers_in_links_and_forms_that_are_not_numbers_are_refused_not_errors(issuer: IssuerRuntime) -> None:
    secret = await _admin(issuer)
    async with _http(issuer) as http:
        await _signed_in(http, "ops", secret)
        for path in ("/console?done=rotated&seq=%C2%B2", "/console/revoke?done=token&seq=" + "9" * 5000):
            assert (await http.get(path)).status_code == 200, path
        for query in ("seq=%C2%B2", "seq=1&seen=%C2%B2", "seq=" + "9" * 5000):
            assert (await http.get(f"/console/api/confirm?{query}")).status_code in (200, 400), query


async def test_an_admin_token_signs_in_and_a_plain_client_does_not(issuer: IssuerRuntime) -> None:
    secret = await _admin(issuer)
    plain = await add_client(issuer, "orders", [issuer.settings.issuer])
    async with _http(issuer) as http:
        grant = {"grant_type": "client_credentials", "audience": issuer.settings.issuer,
                 "scope": issuer.settings.admin_scope}
        token = (await http.post("/token", data=grant, auth=("ops", secret))).json()["access_token"]
        refused = await http.post("/console/signin", data={"client_id": "orders", "client_secret": plain})
        assert refused.status_code == 401 and "Sign-in failed" in refused.text
        refused = await http.post("/console/signin", data={"token": token[:-4] + "AAAA"})
        assert refused.status_code == 401
        answer = await http.post("/console/signin", data={"token": token})
        assert answer.status_code == 303
        page = await http.get("/console")
        assert "signed in as <b>ops</b> (admin token)" in page.text


async def test_state_changes_need_the_csrf_token_and_this_origin(issuer: IssuerRuntime) -> None:
    secret = await _admin(issuer)
    async with _http(issuer) as http:
        await _signed_in(http, "ops", secret)
        page = (await http.get("/console")).text
        csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        form = {"name": "orders", "audiences": "inventory"}
        assert (await http.post("/console/clients", data=form)).status_code == 403
        foreign = await http.post("/console/clients", data={**form, "csrf": csrf},
                                  headers={"Origin": "https://evil.test"})
        assert foreign.status_code == 403
        assert await issuer.ctx.clients().get("orders") is None
        made = await http.post("/console/clients", data={**form, "csrf": csrf})
        assert made.status_code == 200 and "khs_" in made.text and made.headers["cache-control"] == "no-store"
        # A destructive action without its confirmation only asks.
        asked = await http.post("/console/clients/orders/disable", data={"csrf": csrf})
        assert asked.status_code == 200 and "gets no new tokens" in asked.text
        client = await issuer.ctx.clients().get("orders")
        assert client is not None and not client.disabled
        done = await http.post("/console/clients/orders/disable", data={"csrf": csrf, "confirmed": "yes"})
        assert done.status_code == 303
        client = await issuer.ctx.clients().get("orders")
        assert client is not None and client.disabled


async def test_the_console_can_be_turned_off(issuer_settings: IssuerSettings, clock: ManualClock) -> None:
    assert IssuerSettings(**{**issuer_settings.model_dump(), "console": "off"}).console is False
    settings = issuer_settings.model_copy(update={"console": False})
    async with running_issuer(settings, clock) as runtime, _http(runtime) as http:
        for path in ("/console", "/console/signin", "/console/static/console.js"):
            assert (await http.get(path)).status_code == 404
        assert (await http.post("/console/signin", data={})).status_code == 404
        assert (await http.get("/healthz")).status_code in (200, 503)


async def test_the_timeline_marks_the_signing_key_and_the_next_rotation(issuer: IssuerRuntime) -> None:
    state = await issuer.ctx.log.sync()
    now = issuer.clock()
    before = timeline(state, now)
    assert before.signing is not None and before.standby is not None
    assert before.next_rotation is not None and 0 < before.next_rotation <= issuer.settings.rotation_period
    await issuer.admin.rotate(emergency=True)
    after = timeline(await issuer.ctx.log.sync(), now)
    assert after.signing is not None and after.signing.kid == before.standby.kid
    states = {row.kid: row.state for row in after.rows}
    assert states[before.signing.kid] == "revoked"
    assert [s.phase for s in next(r for r in after.rows if r.kid == before.signing.kid).segments][-1] == "revoked"
    assert all(0 <= s.x <= 1000 and s.x + s.width <= 1003 for row in after.rows for s in row.segments)


def _csrf(page: str) -> str:
    return page.split('name="csrf" value="', 1)[1].split('"', 1)[0]


async def test_revoking_a_token_and_a_key_and_rotating_from_the_console(issuer: IssuerRuntime) -> None:
    secret = await _admin(issuer)
    orders = await add_client(issuer, "orders", ["inventory"])
    async with _http(issuer) as http:
        await _signed_in(http, "ops", secret)
        csrf = _csrf((await http.get("/console/revoke")).text)
        token = (await http.post("/token", data={"grant_type": "client_credentials"}, auth=("orders", orders))).json()
        garbage = await http.post("/console/revoke/token", data={"csrf": csrf, "token": "not.a.token"})
        assert garbage.status_code == 400 and "not a token this issuer signed" in garbage.text
        asked = await http.post("/console/revoke/token", data={"csrf": csrf, "token": token["access_token"]})
        assert asked.status_code == 200 and "Revoke a token?" in asked.text
        jti = asked.text.split('name="jti" value="', 1)[1].split('"', 1)[0]
        assert jti not in (await issuer.ctx.log.sync()).revoked_tokens
        done = await http.post("/console/revoke/token", data={"csrf": csrf, "jti": jti, "exp": str(2**31),
                                                              "confirmed": "yes"})
        assert done.status_code == 303 and done.headers["location"].startswith("/console/revoke?done=token&seq=")
        assert jti in (await issuer.ctx.log.sync()).revoked_tokens
        state = await issuer.ctx.log.sync()
        assert state.active_key is not None
        signing = state.active_key.kid
        rotated = await http.post("/console/keys/rotate", data={"csrf": csrf, "confirmed": "yes"})
        assert rotated.status_code == 303 and "done=rotated" in rotated.headers["location"]
        state = await issuer.ctx.log.sync()
        assert state.keys[signing].state.value == "retired"
        asked = await http.post("/console/revoke/key", data={"csrf": csrf, "kid": signing})
        assert "Revoke a key?" in asked.text and state.keys[signing].state.value == "retired"
        await http.post("/console/revoke/key", data={"csrf": csrf, "kid": signing, "confirmed": "yes"})
        assert (await issuer.ctx.log.sync()).keys[signing].state.value == "revoked"
        # No agent reports presence here: the progress says there is nothing to wait for.
        seq = (await issuer.ctx.log.sync()).seq
        progress = (await http.get(f"/console/api/confirm?seq={seq}")).json()
        assert progress["live"] == 0 and progress["complete"]
        assert (await http.get("/console/api/confirm?seq=999999")).status_code == 400

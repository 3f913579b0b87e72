"""FastAPI/Starlette: RFC 6750 answers, scopes, claims on the request; through httpx's ASGI transport."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request

from keyherald.shared.clock import ManualClock
from keyherald.verifier.integrations.fastapi import BearerAuthMiddleware, require_token
from keyherald.verifier.testing import TestIssuer


@pytest.fixture
def issuer() -> TestIssuer:
    return TestIssuer(audience="orders", clock=ManualClock())


def dependency_app(issuer: TestIssuer) -> FastAPI:
    # Dependencies as default values: with postponed annotations FastAPI cannot see locals
    # inside Annotated[...], and a real service builds them the same way around its agent.
    agent = issuer.agent(audience="orders")
    app = FastAPI()

    @app.get("/orders")
    async def orders(
        request: Request, claims: dict[str, Any] = Depends(require_token(agent, scopes=["orders:read"]))  # noqa: B008
    ) -> dict[str, Any]:
        assert request.state.claims is claims
        return {"sub": claims["sub"]}

    @app.get("/open")
    async def open_route(claims: dict[str, Any] = Depends(require_token(agent))) -> dict[str, Any]:  # noqa: B008
        return {"sub": claims["sub"]}

    return app


async def call(app: Any, path: str, token: str | None = None, *, header: str | None = None) -> httpx.Response:
    headers = {"Authorization": header if header is not None else f"Bearer {token}"} if token or header else {}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
        return await client.get(path, headers=headers)


async def test_dependency_accepts_a_valid_token_with_its_scope(issuer: TestIssuer) -> None:
    response = await call(dependency_app(issuer), "/orders", issuer.mint(sub="billing", scope="orders:read"))
    assert response.status_code == 200 and response.json() == {"sub": "billing"}


async def test_no_token_is_a_401_challenge_without_error(issuer: TestIssuer) -> None:
    for header in (None, "Basic dXNlcjpwYXNz"):
        response = await call(dependency_app(issuer), "/open", header=header)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"


async def test_refused_tokens_say_invalid_token_and_nothing_more(
    issuer: TestIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    app = dependency_app(issuer)
    revoked = issuer.mint(scope="orders:read", jti="r1")
    issuer.revoke_token("r1")
    cases = {
        "garbage": "not-a-token",
        "wrong_audience": issuer.mint(aud="inventory", scope="orders:read"),
        "revoked": revoked,
        "foreign": TestIssuer().mint(aud="orders"),
    }
    with caplog.at_level(logging.INFO, logger="keyherald.verifier.auth"):
        for token in cases.values():
            response = await call(app, "/open", token)
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
            assert "revoked" not in response.text and "audience" not in response.text
            assert token not in response.text
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "revoked" in logged and "wrong_audience" in logged and "unknown_key" in logged
    assert all(token not in logged for token in cases.values())


async def test_malformed_authorization_header_is_invalid_request(issuer: TestIssuer) -> None:
    response = await call(dependency_app(issuer), "/open", header="Bearer two tokens")
    assert response.status_code == 400
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_request"'


async def test_missing_scope_is_403_insufficient_scope(issuer: TestIssuer) -> None:
    response = await call(dependency_app(issuer), "/orders", issuer.mint(scope="orders:write"))
    assert response.status_code == 403
    assert response.headers["www-authenticate"] == 'Bearer error="insufficient_scope", scope="orders:read"'


async def test_middleware_guards_every_route_but_the_exempt_ones(issuer: TestIssuer) -> None:
    agent = issuer.agent(audience="orders")
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/me")
    async def me(request: Request) -> dict[str, Any]:
        return {"sub": request.state.claims["sub"]}

    app.add_middleware(BearerAuthMiddleware, agent=agent, scopes=["orders:read"], exempt=["/healthz"])
    assert (await call(app, "/healthz")).status_code == 200
    refused = await call(app, "/me", "junk")
    assert refused.status_code == 401 and refused.json() == {"error": "invalid_token"}
    assert refused.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert (await call(app, "/me", issuer.mint(scope="other"))).status_code == 403
    assert (await call(app, "/me")).headers["www-authenticate"] == "Bearer"
    ok = await call(app, "/me", issuer.mint(sub="svc", scope="orders:read orders:write"))
    assert ok.status_code == 200 and ok.json() == {"sub": "svc"}

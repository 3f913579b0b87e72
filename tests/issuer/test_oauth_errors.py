"""Every RFC 6749 §5.2 error /token can give, as the RFC words it, and never a stack trace.

invalid_grant is absent by design: the client credentials grant has no grant beyond the
client's own credentials, whose failures are invalid_client (RFC 6749 §4.4.2).
"""

from __future__ import annotations

import base64

import httpx
import pytest

from keyherald.issuer.runtime import IssuerRuntime
from tests.tokenservice import add_client, basic, http, issuer

__all__ = ["http", "issuer"]

GRANT = {"grant_type": "client_credentials"}


@pytest.fixture
async def secret(issuer: IssuerRuntime) -> str:
    return await add_client(issuer, "orders", ["inventory"], ["inventory:read"])


def _is_oauth_error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error
    assert set(body) <= {"error", "error_description"}
    assert response.headers["cache-control"] == "no-store"
    assert "Traceback" not in response.text and "detail" not in body


async def test_grant_type_missing_is_invalid_request(http: httpx.AsyncClient, secret: str) -> None:
    response = await http.post("/token", data={"scope": "inventory:read"}, headers=basic("orders", secret))
    _is_oauth_error(response, 400, "invalid_request")


@pytest.mark.parametrize("grant", ["authorization_code", "refresh_token", "password", "", "CLIENT_CREDENTIALS"])
async def test_other_grants_are_unsupported_grant_type(http: httpx.AsyncClient, secret: str, grant: str) -> None:
    response = await http.post("/token", data={"grant_type": grant, "code": "x"}, headers=basic("orders", secret))
    _is_oauth_error(response, 400, "unsupported_grant_type")


async def test_unknown_client_and_wrong_secret_get_the_same_401(http: httpx.AsyncClient, secret: str) -> None:
    unknown = await http.post("/token", data=GRANT, headers=basic("nobody", secret))
    wrong = await http.post("/token", data=GRANT, headers=basic("orders", secret + "x"))
    for response in (unknown, wrong):
        _is_oauth_error(response, 401, "invalid_client")
        assert response.headers["www-authenticate"].startswith("Basic ")
    assert unknown.json() == wrong.json()
    assert secret not in unknown.text + wrong.text


async def test_wrong_secret_by_post_is_invalid_client(http: httpx.AsyncClient, secret: str) -> None:
    response = await http.post("/token", data={**GRANT, "client_id": "orders", "client_secret": "nope"})
    _is_oauth_error(response, 401, "invalid_client")


async def test_no_client_authentication_is_invalid_client(http: httpx.AsyncClient, secret: str) -> None:
    _is_oauth_error(await http.post("/token", data=GRANT), 401, "invalid_client")
    _is_oauth_error(await http.post("/token", data={**GRANT, "client_id": "orders"}), 401, "invalid_client")


@pytest.mark.parametrize("header", ["Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(),
                                    "Bearer abc", "Digest x"])
async def test_malformed_or_foreign_authorization_is_invalid_client(http: httpx.AsyncClient, secret: str,
                                                                    header: str) -> None:
    response = await http.post("/token", data=GRANT, headers={"Authorization": header})
    _is_oauth_error(response, 401, "invalid_client")


async def test_basic_credentials_are_form_urlencoded(issuer: IssuerRuntime, http: httpx.AsyncClient) -> None:
    registry = issuer.ctx.clients()
    _, secret = await registry.create("a.b_c-d", audiences=["x"])
    ok = await http.post("/token", data=GRANT, headers=basic("a.b_c-d", secret))
    assert ok.status_code == 200


async def test_two_authentication_methods_at_once_is_invalid_request(http: httpx.AsyncClient, secret: str) -> None:
    response = await http.post(
        "/token", data={**GRANT, "client_id": "orders", "client_secret": secret}, headers=basic("orders", secret)
    )
    _is_oauth_error(response, 400, "invalid_request")
    mismatch = await http.post("/token", data={**GRANT, "client_id": "other"}, headers=basic("orders", secret))
    _is_oauth_error(mismatch, 400, "invalid_request")


async def test_repeated_parameter_is_invalid_request(http: httpx.AsyncClient, secret: str) -> None:
    body = "grant_type=client_credentials&scope=inventory:read&scope=inventory:read"
    response = await http.post(
        "/token", content=body, headers={**basic("orders", secret), "Content-Type": "application/x-www-form-urlencoded"}
    )
    _is_oauth_error(response, 400, "invalid_request")


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"grant_type": "client_credentials"}', "application/json"),
        (b"grant_type=client_credentials", "text/plain"),
        (b"grant_type=client_credentials", None),
        (b"grant_type=client_credentials&&&", "application/x-www-form-urlencoded"),
        (b"grant_type=\xff\xfe", "application/x-www-form-urlencoded"),
        (b"grant_type=client_credentials&scope=%0a", "application/x-www-form-urlencoded"),
        (b"x=" + b"a" * 20000, "application/x-www-form-urlencoded"),
    ],
)
async def test_malformed_bodies_are_invalid_request_never_422(http: httpx.AsyncClient, secret: str,
                                                              content: bytes, content_type: str | None) -> None:
    headers = basic("orders", secret)
    if content_type:
        headers["Content-Type"] = content_type
    response = await http.post("/token", content=content, headers=headers)
    _is_oauth_error(response, 400, "invalid_request")


async def test_disabled_client_is_unauthorized_client(issuer: IssuerRuntime, http: httpx.AsyncClient,
                                                      secret: str) -> None:
    await issuer.ctx.clients().disable("orders")
    _is_oauth_error(await http.post("/token", data=GRANT, headers=basic("orders", secret)), 400, "unauthorized_client")
    # Without the right secret a disabled client looks like any failed authentication.
    wrong = await http.post("/token", data=GRANT, headers=basic("orders", "guess"))
    _is_oauth_error(wrong, 401, "invalid_client")


async def test_invalid_scope_and_invalid_target(http: httpx.AsyncClient, secret: str) -> None:
    auth = basic("orders", secret)
    _is_oauth_error(await http.post("/token", data={**GRANT, "scope": "root"}, headers=auth), 400, "invalid_scope")
    _is_oauth_error(await http.post("/token", data={**GRANT, "audience": "db"}, headers=auth), 400, "invalid_target")


async def test_other_methods_and_paths_answer_without_internals(http: httpx.AsyncClient) -> None:
    get = await http.get("/token")
    assert get.status_code == 405
    missing = await http.get("/nope")
    assert missing.status_code == 404
    assert "Traceback" not in get.text + missing.text


async def test_no_signing_key_is_503_not_500(issuer: IssuerRuntime, http: httpx.AsyncClient, secret: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from keyherald.issuer.errors import KeyNotFound

    async def no_key(claims: object) -> str:
        raise KeyNotFound("no active signing key yet")

    monkeypatch.setattr(issuer.signer, "sign", no_key)
    _is_oauth_error(await http.post("/token", data=GRANT, headers=basic("orders", secret)), 503,
                    "temporarily_unavailable")


async def test_failures_are_logged_without_the_secret(http: httpx.AsyncClient, secret: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="keyherald.issuer.auth")
    await http.post("/token", data=GRANT, headers=basic("orders", secret + "-typo"))
    await http.post("/token", data=GRANT, headers=basic("evil\nforged line", "x"))
    lines = [r.getMessage() for r in caplog.records if r.name == "keyherald.issuer.auth"]
    assert any("'orders'" in line and "wrong_secret" in line for line in lines)
    assert any("unknown_client" in line and "\\n" in line for line in lines)
    assert all(secret not in line and "\n" not in line for line in lines)

"""The issuer's HTTP server on a hostile network, over real sockets to a real ``uvicorn``:
admin bodies refused before they are read, every body bounded, strict admin JSON,
X-Forwarded-For believed only from configured proxies, no connection held open by a client
that never finishes its request, and every error answer in the OpenAPI document."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from keyherald.issuer.runtime import IssuerRuntime
from keyherald.issuer.settings import IssuerSettings
from keyherald.shared.clock import ManualClock
from tests.tokenservice import add_client, basic, eventually, running_issuer

pytestmark = pytest.mark.redis

GRANT = {"grant_type": "client_credentials"}
LIVENESS = 10.0
"""How long a read may wait for what must come (an answer, a close): a bound on a hang, not a
speed; the server's own timeouts in these tests are 1-2 s."""


@asynccontextmanager
async def served(settings: IssuerSettings, clock: ManualClock, **overrides: Any) -> AsyncIterator[IssuerRuntime]:
    fields = {**settings.model_dump(), "http_host": "127.0.0.1", "http_port": 0, **overrides}
    settings = IssuerSettings(**fields, _env_file=None)  # type: ignore[call-arg]  # validated, as from env
    async with running_issuer(settings, clock, serve_http=True) as runtime:
        await eventually(lambda: _ready(runtime), within=5)  # the admin API answers 503 until then
        yield runtime


async def _ready(runtime: IssuerRuntime) -> bool:
    return runtime.agent is not None


def _base(runtime: IssuerRuntime) -> str:
    return f"http://127.0.0.1:{runtime.http_port}"


async def _admin_token(runtime: IssuerRuntime) -> str:
    secret = await add_client(runtime, "ops", [runtime.settings.issuer], [runtime.settings.admin_scope])
    async with httpx.AsyncClient(base_url=_base(runtime)) as client:
        response = await client.post("/token", data=GRANT, headers=basic("ops", secret))
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), LIVENESS)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), LIVENESS)
    return int(status_line.split()[1]), headers, body


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True once the server closes the connection (EOF or reset); a hang fails the test."""
    try:
        return await asyncio.wait_for(reader.read(65536), LIVENESS) == b""
    except ConnectionResetError:
        return True


async def test_an_unauthenticated_admin_body_is_refused_before_it_is_read(
        issuer_settings: IssuerSettings, clock: ManualClock) -> None:
    """Headers announcing 300 MiB, then only a few bytes: the 401 comes at once and the
    connection is closed; the server neither waits for nor reads the rest."""
    async with served(issuer_settings, clock) as runtime:
        reader, writer = await asyncio.open_connection("127.0.0.1", runtime.http_port)
        writer.write(b"POST /admin/revoke/subject HTTP/1.1\r\nHost: issuer\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 314572800\r\n\r\n{\"sub\": \"or")
        await writer.drain()
        status, headers, body = await _answer(reader)
        assert status == 401 and headers["www-authenticate"] == 'Bearer realm="keyherald"'
        assert headers["connection"] == "close" and b"invalid_token" in body
        assert await _closed_by_server(reader)
        writer.close()

        # A wrong token with a chunked body: refused the same way.
        reader, writer = await asyncio.open_connection("127.0.0.1", runtime.http_port)
        writer.write(b"POST /admin/clients HTTP/1.1\r\nHost: issuer\r\nAuthorization: Bearer x.y.z\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n4000\r\n" + b"a" * 100)
        await writer.drain()
        status, headers, _ = await _answer(reader)
        assert status == 401 and 'error="invalid_token"' in headers["www-authenticate"]
        assert await _closed_by_server(reader)
        writer.close()


async def test_every_body_is_bounded(issuer_settings: IssuerSettings, clock: ManualClock) -> None:
    async with served(issuer_settings, clock) as runtime:
        token = await _admin_token(runtime)
        auth = f"Authorization: Bearer {token}\r\n".encode()
        # An admin caller announcing more than 16 KiB: 413 before a byte is read.
        reader, writer = await asyncio.open_connection("127.0.0.1", runtime.http_port)
        writer.write(b"POST /admin/revoke/subject HTTP/1.1\r\nHost: issuer\r\n" + auth +
                     b"Content-Type: application/json\r\nContent-Length: 314572800\r\n\r\n{")
        await writer.drain()
        status, headers, _ = await _answer(reader)
        assert status == 413 and headers["connection"] == "close"
        assert await _closed_by_server(reader)
        writer.close()
        # Chunked, so no length is announced: cut off once past the bound.
        reader, writer = await asyncio.open_connection("127.0.0.1", runtime.http_port)
        chunk = b'{"sub": "' + b"a" * 20000 + b'"}'
        writer.write(b"POST /admin/revoke/subject HTTP/1.1\r\nHost: issuer\r\n" + auth +
                     b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
                     f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n0\r\n\r\n")
        await writer.drain()
        status, _, _ = await _answer(reader)
        assert status == 413
        writer.close()
        async with httpx.AsyncClient(base_url=_base(runtime)) as client:
            # Any other route: a declared length past the bound is 413 before routing.
            assert (await client.post("/healthz", content=b"x" * 20000)).status_code == 413
            # The OAuth forms keep their RFC 6749 answer: 400 invalid_request.
            big = await client.post("/token", content=b"grant_type=client_credentials&x=" + b"a" * 20000,
                                    headers={"Content-Type": "application/x-www-form-urlencoded"})
            assert big.status_code == 400 and big.json()["error"] == "invalid_request"
        assert not (await runtime.ctx.log.read_state()).revoked_subjects


async def test_admin_json_is_strict(issuer_settings: IssuerSettings, clock: ManualClock) -> None:
    """A duplicate member has no single meaning (which sub was revoked?): refused, as every
    other JSON keyherald reads is."""
    async with served(issuer_settings, clock) as runtime:
        headers = {"Authorization": f"Bearer {await _admin_token(runtime)}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(base_url=_base(runtime)) as client:
            for body in (b'{"sub": "orders", "sub": "ordres"}', b'{"emergency": NaN}', b'["orders"]',
                         b'{"sub": "orders"} {}', b'\xff{"sub": "orders"}'):
                path = "/admin/keys/rotate" if b"emergency" in body else "/admin/revoke/subject"
                response = await client.post(path, content=body, headers=headers)
                assert response.status_code == 400, body
                assert response.json()["error"] == "invalid_request" and "orders" not in response.text
            state = await runtime.ctx.log.read_state()
            assert not state.revoked_subjects
            done = await client.post("/admin/revoke/subject", content=b'{"sub": "orders"}', headers=headers)
            assert done.status_code == 200 and "orders" in (await runtime.ctx.log.read_state()).revoked_subjects


async def _three_wrong_secrets(runtime: IssuerRuntime) -> list[int]:
    """Three failed authentications, each claiming to come from another address."""
    statuses = []
    async with httpx.AsyncClient(base_url=_base(runtime)) as client:
        for i in range(3):
            response = await client.post("/token", data=GRANT, headers={
                **basic("orders", "khs_wrong"), "X-Forwarded-For": f"203.0.113.{i + 1}"})
            statuses.append(response.status_code)
    return statuses


async def test_x_forwarded_for_is_not_believed_by_default(issuer_settings: IssuerSettings,
                                                          clock: ManualClock) -> None:
    """A local caller cannot pose as other addresses to dodge the per-address limit (or to
    spend another address's budget): without configured proxies, the TCP peer counts."""
    async with served(issuer_settings, clock, auth_failures_per_address=2, auth_failures_per_client=100) as runtime:
        await add_client(runtime, "orders", ["inventory"])
        assert await _three_wrong_secrets(runtime) == [401, 401, 429]


async def test_x_forwarded_for_is_believed_from_a_configured_proxy(issuer_settings: IssuerSettings,
                                                                   clock: ManualClock) -> None:
    async with served(issuer_settings, clock, auth_failures_per_address=2, auth_failures_per_client=100,
                      trusted_proxies="10.0.0.0/8, 127.0.0.1") as runtime:
        await add_client(runtime, "orders", ["inventory"])
        assert await _three_wrong_secrets(runtime) == [401, 401, 401]


async def test_a_connection_that_never_finishes_its_request_is_closed(
        issuer_settings: IssuerSettings, clock: ManualClock) -> None:
    async with served(issuer_settings, clock, http_header_timeout=1, http_keepalive_timeout=1) as runtime:
        port = runtime.http_port
        # Half-open: headers never finished. Many at once, as an attacker would hold them.
        half_open = [await asyncio.open_connection("127.0.0.1", port) for _ in range(50)]
        for _, writer in half_open:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: issuer\r\nX-Slow: ")
            await writer.drain()
        assert all(await asyncio.gather(*(_closed_by_server(reader) for reader, _ in half_open)))
        # Headers complete, body trickling: cut off too.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /revoke HTTP/1.1\r\nHost: issuer\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                     b"Content-Length: 100\r\n\r\ntoken=")
        await writer.drain()
        assert await _closed_by_server(reader)
        # A keep-alive connection: answered, then closed once idle.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: issuer\r\n\r\n")
        await writer.drain()
        status, _, _ = await _answer(reader)
        assert status == 200
        assert await _closed_by_server(reader)
        # Partial headers after a first answer on the same connection: closed as well.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: issuer\r\n\r\nGET /healthz HTTP/1.1\r\nHost: iss")
        await writer.drain()
        status, _, _ = await _answer(reader)
        assert status == 200 and await _closed_by_server(reader)
        for _, w in [*half_open, (reader, writer)]:
            w.close()


async def test_a_slow_handler_is_not_cut_off_by_the_request_deadline(
        issuer_settings: IssuerSettings, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """The deadline covers the request's arrival only: an answer that takes longer than it
    (a Redis round trip under load) still goes out."""
    async with served(issuer_settings, clock, http_header_timeout=1) as runtime:
        read_state = runtime.ctx.log.read_state

        async def slow() -> Any:
            await asyncio.sleep(1.5)
            return await read_state()

        monkeypatch.setattr(runtime.ctx.log, "read_state", slow)
        async with httpx.AsyncClient(base_url=_base(runtime), timeout=LIVENESS) as client:
            assert (await client.get("/.well-known/jwks.json")).status_code == 200


def _token_request(secret: str, *, version: bytes = b"1.1", extra: bytes = b"",
                   body: bytes = b"grant_type=client_credentials") -> bytes:
    auth = basic("orders", secret)["Authorization"].encode()
    return (b"POST /token HTTP/" + version + b"\r\nHost: issuer\r\nAuthorization: " + auth +
            b"\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: " +
            str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)


async def test_pipelined_requests_are_answered_in_order(issuer_settings: IssuerSettings, clock: ManualClock) -> None:
    """POST /token is answered from the connection itself; a request pipelined behind it
    (another token request, a route served by the app) waits its turn."""
    async with served(issuer_settings, clock) as runtime:
        secret = await add_client(runtime, "orders", ["inventory"])
        reader, writer = await asyncio.open_connection("127.0.0.1", runtime.http_port)
        writer.write(_token_request(secret) + _token_request("wrong") + b"GET /healthz HTTP/1.1\r\nHost: issuer\r\n\r\n"
                     + _token_request(secret))
        await writer.drain()
        answers = [await _answer(reader) for _ in range(4)]
        assert [status for status, _, _ in answers] == [200, 401, 200, 200]
        assert b"access_token" in answers[0][2] and b"invalid_client" in answers[1][2]
        assert b'"role"' in answers[2][2] and b"access_token" in answers[3][2]
        assert answers[0][1]["cache-control"] == "no-store" and answers[0][1]["content-type"] == "application/json"
        assert answers[1][1]["www-authenticate"].startswith("Basic")
        writer.close()


async def test_expect_100_continue_and_http_1_0_on_the_token_endpoint(issuer_settings: IssuerSettings,
                                                                      clock: ManualClock) -> None:
    async with served(issuer_settings, clock) as runtime:
        secret = await add_client(runtime, "orders", ["inventory"])
        reader, writer = await asyncio.open_connection("127.0.0.1", runtime.http_port)
        request = _token_request(secret, extra=b"Expect: 100-continue\r\n")
        head, body = request.split(b"\r\n\r\n", 1)
        writer.write(head + b"\r\n\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), LIVENESS) == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(body)
        await writer.drain()
        status, headers, _ = await _answer(reader)
        assert status == 200 and "connection" not in headers  # kept alive
        writer.close()
        # HTTP/1.0 without keep-alive: answered, then closed.
        reader, writer = await asyncio.open_connection("127.0.0.1", runtime.http_port)
        writer.write(_token_request(secret, version=b"1.0"))
        await writer.drain()
        status, headers, _ = await _answer(reader)
        assert status == 200 and headers["connection"] == "close"
        assert await _closed_by_server(reader)
        writer.close()


def test_the_server_answers_token_requests_from_the_connection(issuer_settings: IssuerSettings) -> None:
    """Production serves the issuer's app with the direct token path (the socket tests of
    tests/issuer/test_token_endpoint.py and test_oauth_errors.py go through it)."""
    from fastapi import FastAPI

    from keyherald.issuer.http.connection import DirectTokenProtocol, RequestDeadlineProtocol
    from keyherald.issuer.http.server import server_config

    class WithService(FastAPI):
        service = object()

    assert issubclass(server_config(WithService(), issuer_settings).http, DirectTokenProtocol)  # type: ignore[arg-type]
    plain = server_config(FastAPI(), issuer_settings).http
    assert issubclass(plain, RequestDeadlineProtocol) and not issubclass(plain, DirectTokenProtocol)  # type: ignore[arg-type]


async def test_the_openapi_document_names_every_error_answer(issuer_settings: IssuerSettings,
                                                             clock: ManualClock) -> None:
    async with served(issuer_settings, clock) as runtime, httpx.AsyncClient(base_url=_base(runtime)) as client:
        spec = (await client.get("/openapi.json")).json()
    answers = {(method.upper(), path): set(op["responses"]) for path, ops in spec["paths"].items()
               for method, op in ops.items()}
    assert all("422" not in codes for codes in answers.values())  # never sent: malformed is 400
    assert {"400", "401", "429", "503"} <= answers["POST", "/token"]
    assert {"400", "401", "429", "503"} <= answers["POST", "/revoke"]
    assert {"304", "503"} <= answers["GET", "/.well-known/jwks.json"]
    assert {"304", "503"} <= answers["HEAD", "/.well-known/jwks.json"]
    assert "503" in answers["GET", "/healthz"]
    admin = {key: codes for key, codes in answers.items() if key[1].startswith("/admin")}
    assert len(admin) == 13 and all({"401", "403", "503"} <= codes for codes in admin.values())
    assert "400" in answers["GET", "/admin/fleet/confirm"]
    assert all({"400", "413"} <= codes for (method, path), codes in admin.items() if path in (
        "/admin/revoke/subject", "/admin/revoke/token", "/admin/revoke/tokens", "/admin/revoke/key",
        "/admin/keys/rotate", "/admin/clients")
        and method == "POST")
    assert "404" in answers["POST", "/admin/revoke/key"] and "409" in answers["POST", "/admin/clients"]
    assert "404" in answers["POST", "/admin/clients/{client_id}/disable"]
    error = spec["components"]["schemas"]["ErrorBody"]
    assert set(error["properties"]) == {"error", "error_description"}

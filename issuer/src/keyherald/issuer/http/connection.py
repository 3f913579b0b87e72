"""One HTTP/1.1 connection: uvicorn's httptools protocol, with a deadline for each request
and POST /token answered straight from the connection.

The deadline: a request must arrive whole (headers and body) within
``KEYHERALD_HTTP_HEADER_TIMEOUT`` of the connection opening or of the previous answer, else
the connection is closed (uvicorn alone keeps a half-open request forever).

The direct token path: POST /token is nearly all of an issuer's traffic, and through ASGI
each one paid for a scope, a request-response cycle, Starlette's Request and Response and
two writes (the head, then the body), more CPU than the ES256 signature. Here the protocol
recognises ``POST /token`` by its request line, keeps the two headers the grant reads and
the body (bounded as everywhere: :data:`.oauth.MAX_BODY`), asks
:func:`.token.answer_token` (the same policy the ASGI route runs) and writes the answer in
one piece. It takes the place of uvicorn's cycle object for that request, so keep-alive,
the deadline, shutdown and a request pipelined behind it (queued by uvicorn, served through
ASGI once this answer is written) work as for any other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from uvicorn.middleware.proxy_headers import _TrustedHosts
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from .oauth import MAX_BODY, Answer, body_too_large, error_answer
from .token import Presented

__all__ = ["AnswerToken", "DirectTokenProtocol", "RequestDeadlineProtocol", "TokenExchange", "protocol_class"]

AnswerToken = Callable[[Presented], Awaitable[Answer]]


class RequestDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol, with a deadline for each request to arrive whole.

    The deadline is armed whenever the connection waits for a request (on connect, and after
    each answer) and disarmed once the request's last byte is in: a slow-headers or
    slow-body client is cut off, a slow handler is not.
    """

    request_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:
            self._arm()


class _NoEvent:
    """uvicorn wakes a cycle's reader through ``message_event``; nobody waits on ours."""

    __slots__ = ()

    def set(self) -> None:
        return None


_NO_EVENT = _NoEvent()


class TokenExchange:
    """A POST /token served directly, where uvicorn keeps a request's cycle: it answers to
    the attributes the protocol reads (``response_complete``, ``keep_alive``, ...)."""

    __slots__ = ("address", "authorization", "body", "content_type", "disconnected", "keep_alive", "more_body",
                 "response_complete")

    message_event = _NO_EVENT

    def __init__(self, headers: list[tuple[bytes, bytes]], keep_alive: bool, address: str | None) -> None:
        self.address = address
        self.authorization: str | None = None
        self.content_type: str | None = None
        for name, value in headers:
            if name == b"authorization":
                self.authorization = value.decode("latin-1")
            elif name == b"content-type":
                self.content_type = value.decode("latin-1")
        self.body = bytearray()
        self.more_body = True
        self.response_complete = False
        self.disconnected = False
        self.keep_alive = keep_alive


def _declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else -1
    return None


def _forwarded_for(headers: list[tuple[bytes, bytes]]) -> str | None:
    values = [value for name, value in headers if name == b"x-forwarded-for"]
    return b", ".join(values).decode("latin-1") if values else None


class DirectTokenProtocol(RequestDeadlineProtocol):
    """The request-deadline protocol, answering POST /token itself (see the module's doc)."""

    answer_token: AnswerToken | None = None
    trusted_proxies: _TrustedHosts | None = None
    """As uvicorn's ProxyHeadersMiddleware: X-Forwarded-For is believed from these only."""

    def on_headers_complete(self) -> None:
        if (
            self.url != b"/token"
            or self.answer_token is None
            or self.parser.get_method() != b"POST"
            or not (self.cycle is None or self.cycle.response_complete)
            or self.pipeline
            or self.parser.should_upgrade()
        ):
            super().on_headers_complete()
            return
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        exchange = TokenExchange(self.headers, keep_alive, self._address(self.headers))
        self.cycle = exchange  # type: ignore[assignment]
        declared = _declared_length(self.headers)
        if declared is not None and not 0 <= declared <= MAX_BODY:
            self._finish(exchange, error_answer(body_too_large()))  # the rest is not read: closed
            return
        if self.expect_100_continue:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        exchange: Any = self.cycle
        if type(exchange) is not TokenExchange:
            super().on_body(body)
            return
        if exchange.response_complete:
            return
        exchange.body += body
        if len(exchange.body) > MAX_BODY:
            self._finish(exchange, error_answer(body_too_large()))

    def on_message_complete(self) -> None:
        exchange: Any = self.cycle
        if type(exchange) is not TokenExchange:
            super().on_message_complete()
            return
        self._disarm()
        if exchange.response_complete:
            return
        exchange.more_body = False
        task = self.loop.create_task(self._serve(exchange))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _address(self, headers: list[tuple[bytes, bytes]]) -> str | None:
        host = self.client[0] if self.client else None
        trusted = self.trusted_proxies
        if trusted is not None and host in trusted:
            forwarded = _forwarded_for(headers)
            if forwarded is not None:
                found, _ = trusted.get_trusted_client_address(forwarded)
                if found:
                    return str(found)
        return host

    async def _serve(self, exchange: TokenExchange) -> None:
        assert self.answer_token is not None
        presented = Presented(exchange.authorization, exchange.content_type, bytes(exchange.body), exchange.address)
        answer = await self.answer_token(presented)
        self._finish(exchange, answer)

    def _finish(self, exchange: TokenExchange, answer: Answer) -> None:
        """Write the whole answer at once, then let the connection go on as uvicorn would."""
        exchange.response_complete = True
        if exchange.disconnected or self.transport.is_closing():
            return
        status, body, headers = answer
        keep_alive = exchange.keep_alive and headers.get("Connection") != "close"
        head = [STATUS_LINE[status]]
        for raw_name, raw_value in self.server_state.default_headers:
            head += [raw_name, b": ", raw_value, b"\r\n"]
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body))
        for name, text in headers.items():
            if name != "Connection":
                head += [name.lower().encode("latin-1"), b": ", text.encode("latin-1"), b"\r\n"]
        if not keep_alive:
            exchange.keep_alive = False
            head.append(b"connection: close\r\n")
        head += [b"\r\n", body]
        self.transport.write(b"".join(head))
        if not keep_alive:
            self.transport.close()
        self.on_response_complete()


def protocol_class(
    timeout: float, *, answer_token: AnswerToken | None, trusted_proxies: list[str]
) -> type[RequestDeadlineProtocol]:
    """The protocol uvicorn makes for each connection, with these settings built in."""
    attributes: dict[str, Any] = {"request_timeout": timeout}
    if answer_token is None:
        return type("RequestDeadline", (RequestDeadlineProtocol,), attributes)
    attributes["answer_token"] = staticmethod(answer_token)
    attributes["trusted_proxies"] = _TrustedHosts(trusted_proxies) if trusted_proxies else None
    return type("DirectToken", (DirectTokenProtocol,), attributes)

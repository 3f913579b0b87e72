"""One HTTP/1.1 connection: uvicorn's httptools protocol, with a deadline for each request
and POST /token answered straight from the connection.

The deadline: a request must arrive whole (headers and body) within
``KEYHERALD_HTTP_HEADER_TIMEOUT`` of the connection opening or of the previous answer, else
the connection is closed (uvicorn alone keeps a half-open request forever).

The direct token path: POST /token is nearly all of an issuer's traffic, and through ASGI
each one paid for a scope, a request-response cycle, Starlette's Request and Response and
two writes (the head, then the body), more CPU than the ES256 signature. Here the protocol
recognises ``POST /token`` by its request line, keeps the two headers the grant reads and
the body (bounded as everywhere: :data:`.oauth.MAX_BODY`), hands them to
:class:`.express.ExpressLane` (the same policy the ASGI route runs, most often without a
coroutine) and writes the answer in one piece when it comes. It takes the place of
uvicorn's cycle object for that request, so keep-alive, the deadline, shutdown and a
request pipelined behind it (queued by uvicorn, served through ASGI once this answer is
written) work as for any other.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Coroutine
from typing import Any

from uvicorn.middleware.proxy_headers import _TrustedHosts
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from .oauth import MAX_BODY, NO_STORE, Answer, body_too_large, error_answer
from .token import Presented

__all__ = ["AnswerToken", "DirectTokenProtocol", "RequestDeadlineProtocol", "TokenExchange", "protocol_class"]

AnswerToken = Callable[[Presented, Callable[[Answer], None], Callable[[Coroutine[Any, Any, None]], None]], None]
"""``answer(presented, done, spawn)`` (:class:`.express.ExpressLane`): ``done`` gets the
answer, now or later; ``spawn`` runs a coroutine as this connection's task."""


class RequestDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol, with a deadline for each request to arrive whole.

    The deadline runs whenever the connection waits for a request (from its opening, and
    after each answer) until the request's last byte is in: a slow-headers or slow-body
    client is cut off, a slow handler is not. uvicorn's keep-alive timeout (a connection
    that sends nothing at all) is kept the same way. One watchdog timer per connection
    serves both: it is not armed and cancelled with every request (two timers per token
    request cost about 3 us), it wakes when the earlier of the two could expire, checks, and
    sets itself for the next moment that could.
    """

    request_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._waiting_since: float | None = None
        """When the connection began to wait for its next request; None while one is answered."""
        self._quiet = True
        """Nothing received since then (uvicorn's keep-alive timeout applies)."""
        self._watchdog: asyncio.TimerHandle | None = None

    def _wait_for_request(self) -> None:
        self._waiting_since = self.loop.time()
        self._quiet = True

    def _watch(self, delay: float) -> None:
        self._watchdog = self.loop.call_later(max(0.01, delay), self._check)

    def _check(self) -> None:
        self._watchdog = None
        if self.transport.is_closing():
            return
        since = self._waiting_since
        if since is None:  # a request is being answered: the deadline starts again after it
            self._watch(self.request_timeout)
            return
        waited = self.loop.time() - since
        if waited >= self.request_timeout or (self._quiet and waited >= self.timeout_keep_alive):
            self.transport.close()
            return
        left = self.request_timeout - waited
        if self._quiet:
            left = min(left, self.timeout_keep_alive - waited)
        self._watch(left)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._wait_for_request()
        self._watch(min(self.request_timeout, self.timeout_keep_alive))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._quiet = False
        super().data_received(data)

    def on_message_complete(self) -> None:
        self._waiting_since = None
        super().on_message_complete()

    def on_response_complete(self) -> None:
        """uvicorn's, without its per-request keep-alive timer (the watchdog keeps that)."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            self._wait_for_request()


class _NoEvent:
    """uvicorn wakes a cycle's reader through ``message_event``; nobody waits on ours."""

    __slots__ = ()

    def set(self) -> None:
        return None


_NO_EVENT = _NoEvent()


class TokenExchange:
    """A POST /token served directly, where uvicorn keeps a request's cycle: it answers to
    the attributes the protocol reads (``response_complete``, ``keep_alive``, ...)."""

    __slots__ = ("address", "authorization", "body", "content_type", "disconnected", "keep_alive", "length",
                 "more_body", "response_complete")

    message_event = _NO_EVENT

    def __init__(self, headers: list[tuple[bytes, bytes]], keep_alive: bool, address: str | None) -> None:
        self.address = address
        self.authorization: str | None = None
        self.content_type: str | None = None
        self.length: int | None = None
        """The declared Content-Length (-1 when it is not a number)."""
        for name, value in headers:
            if name == b"authorization":
                self.authorization = value.decode("latin-1")
            elif name == b"content-type":
                self.content_type = value.decode("latin-1")
            elif name == b"content-length":
                self.length = int(value) if value.isdigit() else -1
        self.body = bytearray()
        self.more_body = True
        self.response_complete = False
        self.disconnected = False
        self.keep_alive = keep_alive


def _forwarded_for(headers: list[tuple[bytes, bytes]]) -> str | None:
    values = [value for name, value in headers if name == b"x-forwarded-for"]
    return b", ".join(values).decode("latin-1") if values else None


_TOKEN_HEADS: dict[int, tuple[list[tuple[bytes, bytes]], bytes]] = {}
"""The head of a 200 token answer, by the default headers (the Date) it was made with."""


class DirectTokenProtocol(RequestDeadlineProtocol):
    """The request-deadline protocol, answering POST /token itself (see the module's doc)."""

    answer_token: AnswerToken | None = None
    trusted_proxies: _TrustedHosts | None = None
    """As uvicorn's ProxyHeadersMiddleware: X-Forwarded-For is believed from these only."""

    def on_message_begin(self) -> None:
        """uvicorn's, but the ASGI scope is made only for a request the app serves."""
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def _asgi_scope(self) -> None:
        """The scope uvicorn's on_message_begin makes (uvicorn 0.5x)."""
        self.scope = {  # type: ignore[typeddict-item]
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,  # type: ignore[typeddict-item]
            "root_path": self.root_path,
            "headers": self.headers,
            "state": self.app_state.copy(),
        }

    def on_headers_complete(self) -> None:
        if (
            self.url != b"/token"
            or self.answer_token is None
            or self.parser.get_method() != b"POST"
            or not (self.cycle is None or self.cycle.response_complete)
            or self.pipeline
            or self.parser.should_upgrade()
        ):
            self._asgi_scope()
            super().on_headers_complete()
            return
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        exchange = TokenExchange(self.headers, keep_alive, self.client[0] if self.client else None)
        if self.trusted_proxies is not None:
            exchange.address = self._address(self.headers)
        self.cycle = exchange  # type: ignore[assignment]
        declared = exchange.length
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
        self._waiting_since = None
        if exchange.response_complete:
            return
        exchange.more_body = False
        assert self.answer_token is not None
        presented = Presented(exchange.authorization, exchange.content_type, bytes(exchange.body), exchange.address,
                              time.perf_counter())
        self.answer_token(presented, functools.partial(self._finish, exchange), self._spawn)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coroutine)
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

    def _token_head(self) -> bytes:
        """A 200's head up to its length, made again when uvicorn's Date header changes."""
        defaults = self.server_state.default_headers
        cached = _TOKEN_HEADS.get(id(defaults))
        if cached is not None and cached[0] is defaults:
            return cached[1]
        head = [STATUS_LINE[200]]
        for raw_name, raw_value in defaults:
            head += [raw_name, b": ", raw_value, b"\r\n"]
        head.append(b"content-type: application/json\r\ncache-control: no-store\r\npragma: no-cache\r\n"
                    b"content-length: ")
        made = b"".join(head)
        _TOKEN_HEADS.clear()
        _TOKEN_HEADS[id(defaults)] = (defaults, made)
        return made

    def _finish(self, exchange: TokenExchange, answer: Answer) -> None:
        """Write the whole answer at once, then let the connection go on as uvicorn would."""
        exchange.response_complete = True
        if exchange.disconnected or self.transport.is_closing():
            return
        status, body, headers = answer
        if status == 200 and headers is NO_STORE and exchange.keep_alive:  # a token: the usual head
            self.transport.write(self._token_head() + b"%d\r\n\r\n" % len(body) + body)
            self.on_response_complete()
            return
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

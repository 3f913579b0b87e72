"""POST /token under load, keyherald beside oidc-provider, in alternating blocks of one run.

    uv run python bench/issue.py --peer oidc-provider      # about 8 min; --rounds/--seconds to change

The same wrk load (bench/peers/token.lua: client_secret_basic, the same form) against
``keyherald issuer run`` (ES256) and, with ``--peer oidc-provider``, panva's oidc-provider 9
on Node 22 issuing ES256 at+jwt tokens of the same shape (bench/peers/oidc-provider).

Scenarios (``--scenarios`` picks some):

- ``free-16``, ``free-64``: each server on core 0 (keyherald with its Redis), wrk on core 1,
  16 or 64 connections;
- ``neighbour-64``: the same, with a CPU-bound process on core 0 too;
- ``workers-64``: nothing pinned, ``--workers 1`` beside ``--workers 2`` (the machine's
  cores shared by the workers, Redis and wrk), the peer for reference.

Each block is a 1 s warm-up, then ``--seconds`` measured; the servers take turns within a
scenario, the order rotating each round, so a machine getting busier weighs on all alike.
Reported per scenario: the median over rounds of tokens/s, p50, p99 and server CPU per token
(every process and thread of the server from /proc; for keyherald, its Redis too), and
keyherald's ratios to the peer. Every answer must be a 200. The 1-minute load average is
printed with each scenario: compare runs made on a quiet machine only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

if not __package__:  # run as a script: bench/ is not a package on sys.path then
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.issue_servers import (
    Keyherald,
    Measured,
    Peer,
    Server,
    cpu_seconds,
    loadavg,
    pin,
    private_redis,
    wrk,
)

__all__ = ["main"]

SERVER_CORE, CLIENT_CORE = {0}, {1}
GOAL_CPU_US, GOAL_P99_MS, GOAL_RETAINED = 110.0, 10.0, 0.8


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    concurrency: int
    pinned: bool
    neighbour: bool = False


SCENARIOS = {
    s.key: s for s in (
        Scenario("free-16", "16 connections, core free", 16, pinned=True),
        Scenario("free-64", "64 connections, core free", 64, pinned=True),
        Scenario("neighbour-64", "64 connections, a CPU-bound neighbour on the core", 64, pinned=True,
                 neighbour=True),
        Scenario("workers-64", "64 connections, nothing pinned (workers)", 64, pinned=False),
    )
}


@dataclass
class Row:
    scenario: str
    server: str
    measured: Measured
    server_us: float
    redis_us: float
    load: float

    @property
    def cpu_us(self) -> float:
        return self.server_us + self.redis_us


@contextlib.contextmanager
def neighbour(on: bool) -> Iterator[None]:
    """A process that wants the server's core all the time."""
    if not on:
        yield
        return
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    pin([burner.pid], SERVER_CORE)
    try:
        yield
    finally:
        burner.kill()
        burner.wait()


def block(server: Server, scenario: Scenario, seconds: float) -> Row:
    pids = server.pids()
    placed = [*pids, *([server.redis_pid] if server.redis_pid else [])]
    pin(placed, SERVER_CORE if scenario.pinned else None)
    client = CLIENT_CORE if scenario.pinned else None
    with neighbour(scenario.neighbour):
        wrk(server, scenario.concurrency, 1, client)  # warm-up
        load = loadavg()
        before = cpu_seconds(pids), cpu_seconds([server.redis_pid] if server.redis_pid else [])
        measured = wrk(server, scenario.concurrency, seconds, client)
        after = cpu_seconds(pids), cpu_seconds([server.redis_pid] if server.redis_pid else [])
    if measured.errors:
        raise SystemExit(f"bench: {server.name} gave {measured.errors} errors or non-200 answers in {scenario.key}")
    per = 1e6 / measured.requests
    return Row(scenario.key, server.name, measured, (after[0] - before[0]) * per, (after[1] - before[1]) * per, load)


KH = "keyherald, 1 worker"


def median(rows: list[Row], attr: str) -> float:
    return float(statistics.median(getattr(r.measured, attr) if hasattr(r.measured, attr) else getattr(r, attr)
                                   for r in rows))


def report(rows: list[Row], scenarios: list[Scenario], peer: str | None) -> list[str]:
    lines = ["| scenario | server | tokens/s | p50 | p99 | server CPU per token | tokens per CPU-second | load |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    by: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        by.setdefault((row.scenario, row.server), []).append(row)

    def med(key: str, name: str, attr: str) -> float:
        return median(by[(key, name)], attr)

    verdicts: list[str] = []
    for scenario in scenarios:
        key = scenario.key
        for name in [n for (k, n) in by if k == key]:
            cpu, redis = med(key, name, "cpu_us"), med(key, name, "redis_us")
            split = f" ({cpu - redis:.0f} + Redis {redis:.0f})" if redis else ""
            loads = sorted({min(r.load for r in by[(key, name)]), max(r.load for r in by[(key, name)])})
            lines.append(f"| {key} | {name} | {med(key, name, 'rate'):,.0f} | {med(key, name, 'p50_ms'):.1f} ms"
                         f" | {med(key, name, 'p99_ms'):.1f} ms | {cpu:.0f} µs{split} | {1e6 / cpu:,.0f}"
                         f" | {'-'.join(f'{x:.1f}' for x in loads)} |")
        if peer and (key, KH) in by and (key, peer) in by:
            speed = med(key, KH, "rate") / med(key, peer, "rate")
            cpu_ratio = med(key, peer, "cpu_us") / med(key, KH, "cpu_us")
            lines.append(f"| {key} | **keyherald / {peer}** | **{speed:.2f}** | "
                         f"{med(key, KH, 'p50_ms') / med(key, peer, 'p50_ms'):.2f} | "
                         f"{med(key, KH, 'p99_ms') / med(key, peer, 'p99_ms'):.2f} | | **{cpu_ratio:.2f}** | |")
            if key.startswith("free"):
                ours = med(key, KH, "cpu_us")
                verdicts.append(_goal(f"goal 1, {key}: at most {GOAL_CPU_US:.0f} µs per token and at least 2x the"
                                      f" peer's tokens per CPU-second ({ours:.0f} µs, {cpu_ratio:.2f}x)",
                                      ours <= GOAL_CPU_US and cpu_ratio >= 2))
        if key == "free-64" and (key, KH) in by:
            p99 = med(key, KH, "p99_ms")
            verdicts.append(_goal(f"goal 2: p99 at most {GOAL_P99_MS:.0f} ms at c=64 on a free core ({p99:.1f} ms)",
                                  p99 <= GOAL_P99_MS))
    free, crowded = "free-64", "neighbour-64"
    if peer and all((k, n) in by for k in (free, crowded) for n in (KH, peer)):
        kept_ours = med(crowded, KH, "rate") / med(free, KH, "rate")
        kept_theirs = med(crowded, peer, "rate") / med(free, peer, "rate")
        verdicts.append(_goal(
            f"goal 2: under a neighbour, keyherald keeps {kept_ours:.0%} of its free-core tokens/s, {peer}"
            f" {kept_theirs:.0%}: {kept_ours / kept_theirs:.2f} of the peer's ratio (at least {GOAL_RETAINED})",
            kept_ours >= GOAL_RETAINED * kept_theirs))
    return [*lines, "", *verdicts]


def _goal(text: str, met: bool) -> str:
    return f"- {'met' if met else 'NOT MET'}: {text}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--peer", choices=["oidc-provider"], help="the server to measure beside keyherald")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"some of {','.join(SCENARIOS)}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured per block, after a 1 s warm-up")
    parser.add_argument("--workers", default="1,2", help="keyherald worker counts for workers-64")
    args = parser.parse_args(argv)
    scenarios = [SCENARIOS[k] for k in args.scenarios.split(",")]
    counts = sorted({1, *(int(n) for n in args.workers.split(","))}) if any(not s.pinned for s in scenarios) else [1]
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("bench: needs 2 cores (servers on one, wrk on the other)")
    log = Path(os.environ["BENCH_ISSUER_LOG"]) if os.environ.get("BENCH_ISSUER_LOG") else None
    started_load = loadavg()
    with private_redis() as redis, contextlib.ExitStack() as stack:
        servers: dict[str, Server] = {}
        for count in counts:
            server = Keyherald(redis, count, log)
            stack.callback(server.close)
            servers[server.name] = server
        peer: Peer | None = None
        if args.peer:
            peer = Peer()
            stack.callback(peer.close)
            servers[peer.name] = peer
        rows: list[Row] = []
        for round_number in range(args.rounds):
            for scenario in scenarios:
                names = [n for n in servers if n in (KH, "oidc-provider") or not scenario.pinned]
                turn = round_number % len(names)
                for name in names[turn:] + names[:turn]:
                    rows.append(block(servers[name], scenario, args.seconds))
                    print(f"  {scenario.key:>12} {name:<22} {rows[-1].measured.rate:8,.0f}/s"
                          f" p99 {rows[-1].measured.p99_ms:6.1f} ms {rows[-1].cpu_us:5.0f} µs/token"
                          f" (load {rows[-1].load:.2f})", file=sys.stderr)
        versions = f"{redis.name}; {peer.version() if peer else 'no peer'}"
    print(f"\nPOST /token, ES256, client_secret_basic; {os.cpu_count()} CPUs ({_cpu_model()}), Python"
          f" {platform.python_version()}, {versions}; {args.rounds} rounds of {args.seconds:g} s blocks, medians;"
          f" load average {started_load:.2f} at the start\n")
    print("\n".join(report(rows, scenarios, peer.name if peer else None)))
    return 0


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    raise SystemExit(main())

"""``keyherald issuer run --workers N``: one port served by N processes.

A Python process serves tokens on one core; a host with more cores runs more of them. The
process the operator started supervises: it binds the port once, without listening (a
taken port is reported before anything starts), then starts N workers, each a ``keyherald
issuer run`` of its own listening on the port with SO_REUSEPORT, so that the kernel spreads
new connections across them.

Worker 0 is the host's replica proper: it takes part in leader election and, leading,
rotates keys, writes heartbeats, audits and checkpoints. The others only serve: each
follows the log itself (one GET of its head when nothing moved, at every tick and on every
event), so the active key and every client change reach them as they reach worker 0, and
a request reads the log's head anyway (:mod:`.http.clientview`). All of them share the
host's record of the log (``KEYHERALD_STATE_DIR``; merges are locked).

A worker that exits is started again (worker 0 as worker 0); meanwhile the others serve,
and a dead worker's socket leaves the group, so new connections go to the living. A
worker that exits with code 2 (a setting to fix) stops them all with that code. SIGTERM
or SIGINT stops every worker and then the supervisor; a worker whose supervisor is gone
(killed) stops by itself.

Imports stay light (the standard library): the supervisor serves nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence

__all__ = [
    "EXIT_SETTINGS",
    "default_workers",
    "reserve_port",
    "supervise",
    "watch_supervisor",
    "worker_command",
]

log = logging.getLogger("keyherald.issuer")

EXIT_SETTINGS = 2
"""A worker's exit code for a setting to fix: starting it again would fail again."""
_STOP_GRACE = 15.0
_QUICK = 10.0
"""A worker that exits sooner than this after its start counts as failing to start."""


def default_workers() -> int:
    """One worker per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def reserve_port(host: str, port: int) -> socket.socket:
    """The port bound (not listening: no connection waits on it), shared with the workers."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


async def supervise(command: Callable[[int], Sequence[str]], count: int) -> int:
    """Run ``count`` workers (``command(index)`` starts one) until a signal; the exit code."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    running: dict[int, asyncio.subprocess.Process] = {}
    verdict: list[int] = []

    async def keep(index: int) -> None:
        quick_exits = 0
        while not stopping.is_set():
            started = loop.time()
            process = await asyncio.create_subprocess_exec(*command(index))
            running[index] = process
            log.info("worker %d started (pid %d)", index, process.pid)
            exited = asyncio.ensure_future(process.wait())
            stop = asyncio.ensure_future(stopping.wait())
            await asyncio.wait({exited, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if not exited.done():
                await _stop(process)
                return
            code = exited.result()
            running.pop(index, None)
            if code == EXIT_SETTINGS:
                log.error("worker %d cannot run as set up (exit %d): stopping", index, code)
                verdict.append(code)
                stopping.set()
                return
            quick_exits = quick_exits + 1 if loop.time() - started < _QUICK else 0
            delay = min(30.0, 0.5 * 2 ** max(0, quick_exits - 1))
            log.error("worker %d (pid %d) exited with %s; starting it again in %.1fs",
                      index, process.pid, code, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), delay)

    try:
        await asyncio.gather(*(keep(i) for i in range(count)))
    finally:
        await asyncio.gather(*(_stop(p) for p in running.values()), return_exceptions=True)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    return verdict[0] if verdict else 0


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), _STOP_GRACE)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def watch_supervisor(parent: int, every: float = 0.5) -> None:
    """In a worker: stop this process (as SIGTERM would) once its supervisor is gone."""
    while os.getppid() == parent:
        await asyncio.sleep(every)
    log.warning("the supervisor (pid %d) is gone: this worker stops", parent)
    os.kill(os.getpid(), signal.SIGTERM)


def worker_command(argv: Sequence[str], index: int, port: int) -> list[str]:
    """``keyherald ARGV`` as worker ``index`` of this process, on ``port``."""
    return [sys.executable, "-c", "from keyherald.issuer.cli import run; run()", *argv,
            "--worker", f"{index}:{os.getpid()}", "--http-port", str(port)]

"""``keyherald issuer run`` (one replica of the issuer, served by one or more worker processes)
and ``keyherald issuer init``."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING, Any

from ._common import add_parser, add_settings_flags, settings_from

if TYPE_CHECKING:
    from ..settings import IssuerSettings

__all__ = ["register"]


def register(sub: Any) -> None:
    issuer = add_parser(sub, "issuer", "the issuer itself: run a replica, or prepare a namespace for the first one")
    issuer_sub = issuer.add_subparsers(dest="issuer_command", metavar="ACTION", required=True)
    run = add_parser(issuer_sub, "run", "run one replica: leader election, rotation, heartbeats, the HTTP API")
    add_settings_flags(run)
    run.add_argument("--http-host", help="KEYHERALD_HTTP_HOST")
    run.add_argument("--http-port", type=int, help="KEYHERALD_HTTP_PORT")
    run.add_argument(
        "--accept-stale-log", action="store_true",
        help="build on the log in Redis even if no event came for a while and this host cannot tell it from"
             " a rolled-back copy (after every replica was down; see keyherald log status)",
    )
    run.add_argument("--workers", type=_positive, metavar="N",
                     help="KEYHERALD_WORKERS: processes serving the port (default: one per core)")
    run.add_argument("--worker", type=_worker_of, help=argparse.SUPPRESS)  # INDEX:SUPERVISOR_PID, set by the supervisor
    run.set_defaults(handler=_run, long_running=True)
    init = add_parser(
        issuer_sub, "init", "prepare a namespace before the first replica runs: control key, first keys, trust anchor"
    )
    add_settings_flags(init)
    init.set_defaults(handler=_init)


def _positive(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 256:
        raise argparse.ArgumentTypeError("must be a number from 1 to 256")
    return int(value)


def _worker_of(value: str) -> tuple[int, int]:
    index, _, parent = value.partition(":")
    if not index.isdigit() or not parent.isdigit():
        raise argparse.ArgumentTypeError("INDEX:PID")
    return int(index), int(parent)


_PASSED_ON = (("--redis-url", "redis_url"), ("--namespace", "namespace"), ("--issuer", "issuer"),
              ("--kek-file", "kek_file"), ("--http-host", "http_host"))


YOUNG_OBJECTS = 20_000
"""Allocations between two collections of the youngest generation (Python's default: 700)."""


def settle_heap() -> None:
    """Once the server runs: what start-up made (modules, the app, settings) lives as long as
    the process, so the cycle collector stops walking it (gc.freeze), and collects young
    objects less often. A token request makes few cycles; walking the heap cost about 8 us
    of every token's CPU."""
    import gc

    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_OBJECTS, middle, old)


def configure_logging() -> None:
    """One event per line: text (coloured on a terminal only) or JSON (KEYHERALD_LOG_FORMAT=json)."""
    from keyherald.shared.logs import configure_logging as configure

    configure(logging.INFO)


async def _init(args: argparse.Namespace) -> int:
    """Idempotent: on a namespace already in use it only prints the anchor."""
    from ..context import IssuerContext
    from ..rotation import Rotator

    async with IssuerContext(settings_from(args), create=True) as ctx:
        fresh = ctx.log.empty
        events = await Rotator(ctx).tick() if fresh else []
        if events:
            await ctx.log.checkpoint()  # agents start from the first keys, not the log's empty base
        anchor = ctx.control.anchor
    print(f"KEYHERALD_TRUST_ANCHOR={anchor.thumbprint}")
    print(f"namespace ready; {len(events)} events appended" if events else "namespace was ready already")
    return 0


async def _run(args: argparse.Namespace) -> int:
    settings = settings_from(args, http_host=args.http_host, http_port=args.http_port)
    configure_logging()
    if args.worker is not None:
        return await _serve_as_worker(settings, *args.worker, accept_stale_log=args.accept_stale_log)
    from ..workers import default_workers

    count = args.workers or settings.workers or default_workers()
    if count == 1:
        from ..worker import create_worker

        app, _ = create_worker(settings, accept_stale_log=args.accept_stale_log)
        app.after_startup(settle_heap)
        await app.run()
        return 0
    return await _supervise(args, settings, count)


async def _supervise(args: argparse.Namespace, settings: IssuerSettings, count: int) -> int:
    from keyherald.shared.errors import SettingsError

    from ..workers import reserve_port, supervise, worker_command

    host, port = settings.http_host, settings.http_port
    try:
        reserved = reserve_port(host, port)
    except OSError as exc:
        raise SettingsError("KEYHERALD_HTTP_PORT", f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    port = int(reserved.getsockname()[1])
    base = ["issuer", "run"] + [
        item for flag, dest in _PASSED_ON if getattr(args, dest, None) for item in (flag, str(getattr(args, dest)))
    ] + (["--accept-stale-log"] if args.accept_stale_log else [])
    logging.getLogger("keyherald.issuer").info("serving %s:%d from %d workers", host, port, count)
    try:
        return await supervise(lambda index: worker_command(base, index, port), count)
    finally:
        reserved.close()


async def _serve_as_worker(settings: IssuerSettings, index: int, supervisor: int, *, accept_stale_log: bool) -> int:
    import asyncio

    from ..worker import create_worker
    from ..workers import watch_supervisor

    app, _ = create_worker(settings, accept_stale_log=accept_stale_log, duties=index == 0, worker=index,
                           reuse_port=True)
    app.after_startup(settle_heap)
    watcher = asyncio.ensure_future(watch_supervisor(supervisor))
    try:
        await app.run()
    finally:
        watcher.cancel()
    return 0

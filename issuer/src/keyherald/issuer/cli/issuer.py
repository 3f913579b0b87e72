"""``keyherald issuer run`` (one replica of the issuer worker) and ``keyherald issuer init``."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from ._common import add_parser, add_settings_flags, settings_from

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
    run.set_defaults(handler=_run, long_running=True)
    init = add_parser(
        issuer_sub, "init", "prepare a namespace before the first replica runs: control key, first keys, trust anchor"
    )
    add_settings_flags(init)
    init.set_defaults(handler=_init)


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
    from ..worker import create_worker

    settings = settings_from(args, http_host=args.http_host, http_port=args.http_port)
    configure_logging()
    app, _ = create_worker(settings, accept_stale_log=args.accept_stale_log)
    await app.run()
    return 0

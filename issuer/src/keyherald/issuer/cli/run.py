"""``keyherald issuer run``: one replica of the issuer worker."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from ..worker import create_worker
from ._common import add_settings_flags, settings_from

__all__ = ["register"]


def register(sub: Any) -> None:
    issuer = sub.add_parser("issuer", help="run the issuer worker")
    issuer_sub = issuer.add_subparsers(dest="issuer_command", metavar="ACTION", required=True)
    run = issuer_sub.add_parser(
        "run", help="run one replica: leader election, rotation, heartbeats, the HTTP API"
    )
    add_settings_flags(run)
    run.add_argument("--http-host", help="KEYHERALD_HTTP_HOST")
    run.add_argument("--http-port", type=int, help="KEYHERALD_HTTP_PORT")
    run.set_defaults(handler=_run)


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


async def _run(args: argparse.Namespace) -> int:
    settings = settings_from(args, http_host=args.http_host, http_port=args.http_port)
    configure_logging()
    app, _ = create_worker(settings)
    await app.run()
    return 0

"""The ``keyherald`` command. Each sub-module registers its own sub-commands.

Errors reach the operator as one line naming what failed (``keyherald: error: ...``) and a
non-zero exit; tracebacks only with KEYHERALD_DEBUG=1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from keyherald.shared.errors import KeyheraldError

from . import clients, dev, keys, revoke, run, secrets

__all__ = ["build_parser", "main"]

_MODULES = (dev, run, secrets, keys, clients, revoke)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keyherald",
        description="keyherald: rotating JWT signing keys and revocations, pushed to offline verifiers.",
        epilog="Settings come from KEYHERALD_* environment variables; flags override them.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = os.environ.get("KEYHERALD_DEBUG") == "1"
    try:
        code = asyncio.run(args.handler(args))
    except KeyboardInterrupt:
        code = 130
    except KeyheraldError as exc:
        if debug:
            raise
        print(f"keyherald: error: {exc}", file=sys.stderr)
        code = 2
    except (OSError, ValueError) as exc:
        if debug:
            raise
        print(f"keyherald: error: {exc or type(exc).__name__}", file=sys.stderr)
        code = 1
    except Exception as exc:
        if debug:
            raise
        print(
            f"keyherald: unexpected error ({type(exc).__name__}); KEYHERALD_DEBUG=1 shows the traceback",
            file=sys.stderr,
        )
        code = 1
    sys.exit(code or 0)

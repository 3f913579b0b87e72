"""The ``keyherald`` command. Each sub-module registers its own sub-commands.

Exit codes, the same for every command (scripts and CI branch on them):

    0  done (also "nothing to do": a namespace ready already, a token expired already)
    1  the operation failed or was refused: no such client or key, a client that exists
       already, an unregistered subject without --force, a token endpoint that said no,
       Redis lost midway
    2  the command cannot run as given: bad usage or argument value, a bad or missing
       setting (wrong KEK, unreachable Redis, a namespace no issuer has prepared)
  130  interrupted (Ctrl-C)

Errors reach the operator as one line naming what failed (``keyherald: error: ...``);
tracebacks only with KEYHERALD_DEBUG=1.

Start-up is an operator's wait in an incident (bench/cli_startup.py): sub-modules import what
a command needs when it runs, never at parse time (``keyherald revoke`` loads no FastAPI,
uvicorn or FastStream); the console script (:func:`run`) keeps the cycle collector off for
a short command, whose few cycles die with the process, and skips the interpreter's module
teardown at exit. ``dev`` and ``issuer run`` turn the collector back on, and run on uvloop
where it is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from keyherald.shared.errors import KeyheraldError, SettingsError

from . import backup, clients, dev, fleet, issuer, keys, log, revoke, secrets, token
from ._common import OperationFailed

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "build_parser", "exit_code", "main", "run"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

_MODULES = (dev, issuer, secrets, keys, clients, revoke, token, fleet, log, backup)


class _Version(argparse.Action):
    """``--version``, read from the installed distribution only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit", **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("keyherald-issuer")
        except PackageNotFoundError:  # run from a source tree that was never installed
            found = "unknown"
        print(f"keyherald {found}")
        parser.exit(EXIT_OK)


def build_parser() -> argparse.ArgumentParser:
    from ._common import Parser

    parser = Parser(
        prog="keyherald",
        description="keyherald: rotating JWT signing keys and revocations, pushed to offline verifiers.",
        epilog="Settings come from KEYHERALD_* environment variables; flags override them. "
               "Exit codes: 0 done, 1 the operation failed, 2 bad usage or settings.",
    )
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _MODULES:
        module.register(sub)
    return parser


def _loop_factory(args: argparse.Namespace) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop for a server (its transports, timers and callbacks cost less CPU per request),
    where installed; asyncio's own loop for a short command, which would only pay the import."""
    if not getattr(args, "long_running", False):
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def exit_code(exc: BaseException) -> int:
    """The convention above, for an error a command raised."""
    from ..errors import NamespaceOwnedElsewhere

    if isinstance(exc, SettingsError | NamespaceOwnedElsewhere):  # the settings name another issuer's
        return EXIT_USAGE
    if isinstance(exc, OperationFailed | KeyheraldError | OSError):
        return EXIT_FAILED
    if isinstance(exc, ValueError):  # an argument value the operation refused
        return EXIT_USAGE
    return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)  # usage errors exit 2 here
    if getattr(args, "long_running", False):
        gc.enable()
    debug = os.environ.get("KEYHERALD_DEBUG") == "1"
    try:
        with asyncio.Runner(loop_factory=_loop_factory(args)) as runner:
            code = runner.run(args.handler(args))
    except KeyboardInterrupt:
        code = 130
    except (KeyheraldError, OperationFailed, OSError, ValueError) as exc:
        if debug:
            raise
        print(f"keyherald: error: {exc or type(exc).__name__}", file=sys.stderr)
        code = exit_code(exc)
    except Exception as exc:
        if debug:
            raise
        from redis.exceptions import RedisError, ResponseError

        if isinstance(exc, ResponseError) and str(exc).startswith("WRONGTYPE"):
            print("keyherald: error: Redis holds junk where keyherald keeps its data (a key of the wrong type:"
                  " someone else writes Redis); a running issuer leader repairs it within a few seconds: try"
                  " again, and see `keyherald log status`", file=sys.stderr)
        else:
            what = "Redis failed midway" if isinstance(exc, RedisError) else "unexpected error"
            print(f"keyherald: {what} ({type(exc).__name__}); KEYHERALD_DEBUG=1 shows the traceback",
                  file=sys.stderr)
        code = EXIT_FAILED
    sys.exit(code or EXIT_OK)


def run() -> NoReturn:
    """The ``keyherald`` console script: :func:`main`, fast in and fast out (see above)."""
    gc.disable()
    try:
        main()
        code: object = EXIT_OK
    except SystemExit as done:
        code = done.code
    if isinstance(code, str):  # sys.exit("message")
        print(code, file=sys.stderr)
        code = EXIT_FAILED
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe (keyherald ... | head): nothing more to say
        pass
    os._exit(code if isinstance(code, int) else EXIT_OK)

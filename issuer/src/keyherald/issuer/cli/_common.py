"""What every sub-command shares: settings flags, output, the failure an operator must see.

Only argparse at import time: a command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from keyherald.shared.events import Event

    from ..context import IssuerContext
    from ..settings import IssuerSettings

T = TypeVar("T")

__all__ = [
    "Parser",
    "OperationFailed",
    "acted",
    "Subparsers",
    "add_parser",
    "confirmed",
    "add_settings_flags",
    "emit_json",
    "opened_context",
    "settings_from",
]

Subparsers = "argparse._SubParsersAction[argparse.ArgumentParser]"


class OperationFailed(Exception):
    """The command ran but its operation was refused or failed (exit 1)."""


_VALUE_WITH_A_DASH = re.compile(r"^-\d+$|^-\d*\.\d+$|^-[A-Za-z0-9_][A-Za-z0-9_-]{15,}$")
"""What argparse takes for a value, not an option, though it starts with '-': numbers, as
argparse does, and base64url identifiers (kids, thumbprints, jtis: 1 in 64 starts with '-')."""


class Parser(argparse.ArgumentParser):
    """argparse, but ``revoke key -x9...`` is a kid, not an unknown option (exit 2)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _VALUE_WITH_A_DASH

    def _parse_optional(self, arg_string: str) -> Any:
        # Before argparse's prefix matching, which reads "-hAbc..." as -h with a value.
        if _VALUE_WITH_A_DASH.match(arg_string) and arg_string not in self._option_string_actions:
            return None
        return super()._parse_optional(arg_string)


def add_parser(sub: Any, name: str, text: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A sub-command whose one-line help is also its --help description."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=text, description=text, **kwargs)
    return parser


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (override KEYHERALD_* variables)")
    group.add_argument("--redis-url", help="KEYHERALD_REDIS_URL")
    group.add_argument("--namespace", help="KEYHERALD_NAMESPACE")
    group.add_argument("--issuer", help="KEYHERALD_ISSUER")
    group.add_argument("--kek-file", help="KEYHERALD_KEK_FILE")


def settings_from(args: argparse.Namespace, **extra: Any) -> IssuerSettings:
    from keyherald.shared.settings import load_settings

    from ..settings import IssuerSettings

    flags = {
        "redis_url": getattr(args, "redis_url", None),
        "namespace": getattr(args, "namespace", None),
        "issuer": getattr(args, "issuer", None),
        "kek_file": getattr(args, "kek_file", None),
    }
    merged = {**flags, **{k: v for k, v in extra.items() if v is not None}}
    return load_settings(IssuerSettings, **merged)


@asynccontextmanager
async def opened_context(args: argparse.Namespace, **extra: Any) -> AsyncIterator[IssuerContext]:
    """The issuer's context for an admin action, on a namespace an issuer has prepared.

    A namespace with no control key is a setting to fix (KEYHERALD_NAMESPACE or the Redis
    URL point elsewhere), not a failed operation: it exits 2, like any bad setting.
    """
    from keyherald.shared.errors import SettingsError

    from ..context import IssuerContext
    from ..errors import KeyNotFound

    ctx = IssuerContext(settings_from(args, **extra), create=False)
    try:
        await ctx.open()
    except KeyNotFound as exc:
        raise SettingsError("KEYHERALD_NAMESPACE", str(exc)) from None
    try:
        yield ctx
    finally:
        await ctx.close()


async def acted(ctx: IssuerContext, action: Callable[[], Awaitable[tuple[T, Sequence[Event]]]]) -> T:
    """Run a change and wait until a replica witnessed it (:mod:`keyherald.issuer.witness`);
    a change nobody can witness (no replica running) is said so on standard error."""
    from ..witness import NotWitnessed, Verdict, witnessed

    try:
        result, outcome = await witnessed(ctx, action)
    except NotWitnessed as exc:
        raise OperationFailed(f"not confirmed: {exc}") from None
    if outcome.verdict is Verdict.NO_LEADER:
        print(f"note: no issuer replica is running to witness it; it is in Redis at seq {outcome.seq}",
              file=sys.stderr)
    return result


def confirmed(given: str | None, namespace: str) -> bool:
    """A destructive action confirmed: ``--confirm NAMESPACE`` (scripts), or the namespace typed
    at a prompt; anything else refuses."""
    if given is not None:
        return given == namespace
    if not sys.stdin.isatty():
        print("keyherald: not a terminal: pass --confirm NAMESPACE to confirm", file=sys.stderr)
        return False
    print(f"Type the namespace ({namespace}) to confirm: ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip() == namespace


def emit_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")

"""``keyherald revoke token|subject|key``: publish a revocation every agent applies within a second.

Acts with the issuer's own settings (Redis URL, KEK), as a replica does: no running issuer
is needed. Each prints the seq of the event it published. This is the command an operator
runs in an incident, so it imports only the log and the admin actions (see bench/cli_startup.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ._common import OperationFailed, acted, add_parser, add_settings_flags, opened_context
from .confirm import add_wait_flags, confirm

if TYPE_CHECKING:
    from keyherald.shared.events import Event

    from ..context import IssuerContext

__all__ = ["parse_time", "read_jti_lines", "register"]


def parse_time(text: str) -> int:
    """Unix seconds (``1767225600``) or ISO 8601 (``2026-01-01T00:00:00Z``; no zone means UTC)."""
    value = text.strip()
    if value.isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither Unix seconds nor an ISO 8601 time (2026-01-01T00:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def register(sub: Any) -> None:
    revoke = add_parser(sub, "revoke", "revoke a token, every token of a subject, or a key")
    revoke_sub = revoke.add_subparsers(dest="revoke_command", metavar="WHAT", required=True)

    token = add_parser(revoke_sub, "token", "one token, by its jti and exp, or the token itself")
    which = token.add_mutually_exclusive_group(required=True)
    which.add_argument("--jti", help="the token's jti (give --expires-at too)")
    which.add_argument(
        "--jti-file", metavar="FILE", help="many tokens: one 'JTI EXPIRES_AT' per line (Unix seconds or ISO 8601;"
        " blank lines and '#' comments skipped); '-' reads standard input. Any bad line: nothing is revoked",
    )
    which.add_argument(
        "--token", help="the token itself (checked against the issuer's keys); '-' reads it from standard"
        " input, which keeps a live token out of the process list and the shell history",
    )
    token.add_argument("--expires-at", type=parse_time, metavar="T",
                       help="the token's exp: Unix seconds or ISO 8601")
    token.set_defaults(handler=_token)

    subject = add_parser(revoke_sub, "subject", "every token issued to a client up to now (this second included)")
    subject.add_argument("sub", metavar="CLIENT_ID")
    subject.add_argument(
        "--force", action="store_true",
        help="revoke even if no client of that name is registered (a deleted client's tokens may live on)",
    )
    subject.set_defaults(handler=_subject)

    key = add_parser(revoke_sub, "key", "a compromised key: an active one is replaced at once")
    key.add_argument("kid", metavar="KID")
    key.set_defaults(handler=_key)

    for parser in (token, subject, key):
        parser.add_argument("--json", action="store_true", help="print {seq} as JSON")
        add_wait_flags(parser)
        add_settings_flags(parser)


async def _done(ctx: IssuerContext, args: argparse.Namespace, what: str, seq: int) -> int:
    if not args.json:
        print(f"revoked {what}; seq {seq}", flush=True)
    return await confirm(ctx, args, seq, {"seq": seq})


MAX_BAD_LINES = 20
"""Bad lines listed in the error (all are counted)."""


def read_jti_lines(lines: Iterable[str], source: str) -> list[tuple[str, int]]:
    """``JTI EXPIRES_AT`` pairs, or ValueError naming every bad line (nothing is revoked)."""
    tokens: list[tuple[str, int]] = []
    bad: list[str] = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = text.split()
        if len(fields) != 2:
            bad.append(f"line {number}: expected 'JTI EXPIRES_AT', got {len(fields)} field(s)")
            continue
        jti, when = fields
        if len(jti) > 256:
            bad.append(f"line {number}: the jti is longer than 256 characters")
            continue
        try:
            tokens.append((jti, parse_time(when)))
        except argparse.ArgumentTypeError:
            bad.append(f"line {number}: {when[:40]!r} is neither Unix seconds nor an ISO 8601 time")
    if bad:
        shown = "\n  ".join(bad[:MAX_BAD_LINES])
        more = f"\n  ... and {len(bad) - MAX_BAD_LINES} more" if len(bad) > MAX_BAD_LINES else ""
        raise ValueError(f"{len(bad)} bad line(s) in {source}; nothing was revoked:\n  {shown}{more}")
    if not tokens:
        raise ValueError(f"{source} names no token; nothing was revoked")
    return tokens


def _read_jti_file(name: str) -> list[tuple[str, int]]:
    if name == "-":
        return read_jti_lines(sys.stdin, "standard input")
    try:
        with open(name, encoding="utf-8") as handle:
            return read_jti_lines(handle, name)
    except OSError as exc:
        raise ValueError(f"cannot read {name}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{name} is not UTF-8 text; nothing was revoked") from None


async def _tokens(args: argparse.Namespace) -> int:
    from ..admin import Admin

    if args.expires_at is not None:
        raise ValueError("--expires-at goes with --jti; a --jti-file gives each token's own")
    tokens = _read_jti_file(args.jti_file)
    async with opened_context(args) as ctx:
        now = int(ctx.clock())
        live = [(jti, end) for jti, end in tokens if end >= now]
        if not live:
            print("every token in the file has expired already; nothing to revoke", file=sys.stderr)
            return 0
        admin = Admin(ctx)

        async def revoke() -> tuple[int, list[Event]]:
            return await admin.revoke_tokens(live), admin.last_events

        seq = await acted(ctx, revoke)
        skipped = f" ({len(tokens) - len(live)} expired already, skipped)" if len(live) < len(tokens) else ""
        return await _done(ctx, args, f"{len(live)} tokens{skipped}", seq)


async def _token(args: argparse.Namespace) -> int:
    from ..admin import Admin

    if args.jti_file is not None:
        return await _tokens(args)
    from ..tokens import verified_claims

    if args.jti is not None and args.expires_at is None:
        raise ValueError("--jti needs --expires-at (the token's exp), so the revocation can be forgotten after it")
    if args.token is not None and args.expires_at is not None:
        raise ValueError("--expires-at goes with --jti; with --token the exp is read from the token")
    async with opened_context(args) as ctx:
        jti, expires_at = args.jti, args.expires_at
        if args.token is not None:
            text = sys.stdin.readline() if args.token == "-" else args.token
            claims = verified_claims(text.strip(), await ctx.log.read_state(), ctx.settings.issuer)
            jti, expires_at = (claims or {}).get("jti"), (claims or {}).get("exp")
            if not isinstance(jti, str) or not isinstance(expires_at, int):
                raise ValueError("that is not a token this issuer signed with a key it still holds")
            if expires_at < ctx.clock():
                print("the token has expired already; nothing to revoke", file=sys.stderr)
                return 0
        admin = Admin(ctx)

        async def revoke() -> tuple[int, list[Event]]:
            return await admin.revoke_token(jti, int(expires_at)), admin.last_events

        seq = await acted(ctx, revoke)
        return await _done(ctx, args, f"token {jti}", seq)


async def _subject(args: argparse.Namespace) -> int:
    """A typo (``ordres``) must not "succeed" and leave the real client's tokens valid."""
    from ..admin import Admin

    async with opened_context(args) as ctx:
        if await ctx.clients().get(args.sub) is None:
            if not args.force:
                raise OperationFailed(
                    f"no registered client is named {args.sub!r} (keyherald clients list); nothing revoked."
                    " For a deleted client's tokens, add --force"
                )
            print(f"note: no registered client is named {args.sub!r}; revoking the subject anyway (--force)",
                  file=sys.stderr)
        admin = Admin(ctx)

        async def revoke() -> tuple[int, list[Event]]:
            return await admin.revoke_subject(args.sub), admin.last_events

        seq = await acted(ctx, revoke)
        return await _done(ctx, args, f"every token of {args.sub} issued so far", seq)


async def _key(args: argparse.Namespace) -> int:
    from ..admin import Admin

    async with opened_context(args) as ctx:
        admin = Admin(ctx)

        async def revoke() -> tuple[int, list[Event]]:
            return await admin.revoke_key(args.kid), admin.last_events

        seq = await acted(ctx, revoke)
        return await _done(ctx, args, f"key {args.kid}", seq)

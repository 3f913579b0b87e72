"""``keyherald clients create|list|disable|enable|rotate-secret``: the client registry.

A secret is printed once, when created or rotated; keyherald keeps only its hash.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ._common import acted, add_parser, add_settings_flags, emit_json, opened_context

if TYPE_CHECKING:
    from keyherald.shared.events import Event

__all__ = ["register"]


def _ttl(text: str) -> int:
    from keyherald.shared.durations import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds < 1:
        raise argparse.ArgumentTypeError("a token ttl is at least 1s")
    return int(seconds)


def register(sub: Any) -> None:
    clients = add_parser(sub, "clients", "register the services that may get tokens")
    clients_sub = clients.add_subparsers(dest="clients_command", metavar="ACTION", required=True)

    create = add_parser(clients_sub, "create", "register a client and print its secret, once")
    create.add_argument("name", metavar="NAME", help="the client_id: the sub of its tokens (e.g. orders)")
    create.add_argument("--audience", action="append", required=True, metavar="AUD",
                        help="an audience it may get tokens for (repeat for several)")
    create.add_argument("--scope", action="append", default=[], metavar="SCOPE",
                        help="a scope it may ask for (repeat for several)")
    create.add_argument("--ttl", type=_ttl, metavar="DURATION",
                        help="lifetime of its tokens (e.g. 5m); capped by KEYHERALD_TOKEN_TTL")
    create.add_argument("--json", action="store_true", help="print {client_id, client_secret} as JSON")
    add_settings_flags(create)
    create.set_defaults(handler=_create)

    listing = add_parser(clients_sub, "list", "registered clients (never their secrets)")
    listing.add_argument("--json", action="store_true", help="a JSON list of objects")
    add_settings_flags(listing)
    listing.set_defaults(handler=_list)

    for name, handler, text in (
        ("disable", _disable, "refuse it tokens from now on (tokens it holds live on: revoke subject)"),
        ("enable", _enable, "let a disabled client get tokens again"),
    ):
        action = add_parser(clients_sub, name, text)
        action.add_argument("client_id", metavar="CLIENT_ID")
        add_settings_flags(action)
        action.set_defaults(handler=handler)

    rotate = add_parser(clients_sub, "rotate-secret", "a new secret; the old one stops working at once")
    rotate.add_argument("client_id", metavar="CLIENT_ID")
    rotate.add_argument("--json", action="store_true", help="print {client_id, client_secret} as JSON")
    add_settings_flags(rotate)
    rotate.set_defaults(handler=_rotate)


def _print_secret(client_id: str, secret: str, as_json: bool) -> None:
    if as_json:
        emit_json({"client_id": client_id, "client_secret": secret})
        return
    print(f"client_id:     {client_id}")
    print(f"client_secret: {secret}")
    print("The secret is shown this once; keyherald keeps only its hash. Store it now.")


async def _create(args: argparse.Namespace) -> int:
    from keyherald.shared.durations import format_duration

    async with opened_context(args) as ctx:
        registry = ctx.clients()

        async def create() -> tuple[Any, list[Event]]:
            made = await registry.create(args.name, audiences=args.audience, scopes=args.scope, ttl=args.ttl)
            return made, registry.last_events

        client, secret = await acted(ctx, create)
        cap = int(ctx.settings.token_ttl)
    _print_secret(client.client_id, secret, args.json)
    if client.ttl is not None and client.ttl > cap and not args.json:
        print(f"note: its tokens will live {format_duration(cap)} (KEYHERALD_TOKEN_TTL caps --ttl)")
    return 0


def _when(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


async def _list(args: argparse.Namespace) -> int:
    from keyherald.shared.durations import format_duration

    async with opened_context(args) as ctx:
        clients = await ctx.clients().list()
        default_ttl = int(ctx.settings.token_ttl)
    if args.json:
        emit_json([c.public() for c in clients])
        return 0
    print(f"{'CLIENT_ID':<24} {'STATUS':<9} {'TTL':<6} {'CREATED':<21} {'AUDIENCES':<28} SCOPES")
    for c in clients:
        ttl = format_duration(min(c.ttl, default_ttl) if c.ttl else default_ttl)
        status = "disabled" if c.disabled else "enabled"
        print(f"{c.client_id:<24} {status:<9} {ttl:<6} {_when(c.created_at):<21} "
              f"{','.join(c.audiences):<28} {' '.join(c.scopes) or '-'}")
    return 0


async def _disable(args: argparse.Namespace) -> int:
    async with opened_context(args) as ctx:
        registry = ctx.clients()

        async def disable() -> tuple[Any, list[Event]]:
            return await registry.disable(args.client_id), registry.last_events

        await acted(ctx, disable)
    print(f"disabled {args.client_id}: it gets no more tokens. Tokens it holds stay valid until they expire;")
    print(f"to refuse those too: keyherald revoke subject {args.client_id}")
    return 0


async def _enable(args: argparse.Namespace) -> int:
    async with opened_context(args) as ctx:
        registry = ctx.clients()

        async def enable() -> tuple[Any, list[Event]]:
            return await registry.enable(args.client_id), registry.last_events

        await acted(ctx, enable)
    print(f"enabled {args.client_id}")
    return 0


async def _rotate(args: argparse.Namespace) -> int:
    async with opened_context(args) as ctx:
        registry = ctx.clients()

        async def rotate() -> tuple[Any, list[Event]]:
            return await registry.rotate_secret(args.client_id), registry.last_events

        client, secret = await acted(ctx, rotate)
    _print_secret(client.client_id, secret, args.json)
    if not args.json:
        print("The old secret no longer works.")
    return 0

"""``keyherald keys list`` and ``keyherald keys rotate [--emergency]``."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ._common import acted, add_parser, add_settings_flags, emit_json, opened_context
from .confirm import add_wait_flags, confirm

if TYPE_CHECKING:
    from keyherald.shared.events import Event

__all__ = ["register"]


def register(sub: Any) -> None:
    keys = add_parser(sub, "keys", "list or rotate the token-signing keys")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    listing = add_parser(keys_sub, "list", "every key agents hold, with its state and times")
    listing.add_argument("--json", action="store_true", help="a JSON list of objects")
    add_settings_flags(listing)
    listing.set_defaults(handler=_list)
    rotate = add_parser(keys_sub, "rotate", "activate the standby key now and publish a new standby")
    rotate.add_argument(
        "--emergency", action="store_true",
        help="also revoke the key being replaced (it is compromised): its tokens stop verifying",
    )
    rotate.add_argument("--json", action="store_true", help="print {seq} as JSON")
    add_wait_flags(rotate)
    add_settings_flags(rotate)
    rotate.set_defaults(handler=_rotate)


def _when(ts: int | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


async def _list(args: argparse.Namespace) -> int:
    from ..admin import Admin
    from ..lifecycle import describe

    async with opened_context(args) as ctx:
        records = await Admin(ctx).keys()
    if args.json:
        emit_json([describe(r) for r in records])
        return 0
    print(f"{'KID':<44} {'ALG':<6} {'STATE':<10} {'ACTIVATED':<21} {'RETIRED/REVOKED':<21} EXPIRES")
    for r in records:
        activated = r.activated_at if r.activated_at is not None else r.activates_at
        ended = r.revoked_at if r.revoked_at is not None else r.retired_at
        times = f"{_when(activated):<21} {_when(ended):<21} {_when(r.expires_at)}"
        print(f"{r.kid:<44} {r.alg:<6} {r.state.value:<10} {times}")
    return 0


async def _rotate(args: argparse.Namespace) -> int:
    from ..admin import Admin

    async with opened_context(args) as ctx:
        admin = Admin(ctx)

        async def rotate() -> tuple[int, list[Event]]:
            return await admin.rotate(emergency=args.emergency), admin.last_events

        seq = await acted(ctx, rotate)
        if not args.json:
            print(f"rotated{' (emergency: the old key is revoked)' if args.emergency else ''}; seq {seq}", flush=True)
        return await confirm(ctx, args, seq, {"seq": seq})

"""``keyherald kek``, ``keyherald anchor`` and ``keyherald anchor rotate``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ._common import add_parser, add_settings_flags, emit_json, opened_context

__all__ = ["register"]


def register(sub: Any) -> None:
    kek = add_parser(sub, "kek", "print a fresh key-encryption key (for KEYHERALD_KEK): 32 random bytes, base64url")
    kek.set_defaults(handler=_kek)
    anchor = add_parser(sub, "anchor", "print the trust anchor agents pin (the control key's public JWK and"
                        " thumbprint), or rotate it")
    anchor.add_argument("--json", action="store_true", help="print {jwk, thumbprint} as JSON")
    add_settings_flags(anchor)
    anchor.set_defaults(handler=_anchor)
    actions = anchor.add_subparsers(dest="anchor_command", metavar="ACTION")
    rotate = add_parser(
        actions, "rotate",
        "make a new control key, introduced by the current one: running agents move to it by themselves,"
        " agents pinned to the old one still start (through the chain of rotations)",
    )
    rotate.add_argument(
        "--revoke-previous", action="store_true",
        help="cut the current key out (it may have leaked): agents started later must pin the new anchor",
    )
    rotate.add_argument("--confirm", metavar="NAMESPACE",
                        help="with --revoke-previous: the namespace's name, to confirm without the prompt")
    add_settings_flags(rotate)
    rotate.set_defaults(handler=_rotate)


async def _kek(args: argparse.Namespace) -> int:
    from ..kek import generate_kek_text

    print(generate_kek_text())
    return 0


async def _anchor(args: argparse.Namespace) -> int:
    async with opened_context(args) as ctx:
        anchor = ctx.control.anchor
        assert anchor.key is not None
        jwk = anchor.key.jwk
    if args.json:
        emit_json({"jwk": jwk, "thumbprint": anchor.thumbprint})
    else:
        print(f"KEYHERALD_TRUST_ANCHOR={anchor.thumbprint}")
        print(f"public JWK: {json.dumps(jwk, sort_keys=True)}")
    return 0


async def _rotate(args: argparse.Namespace) -> int:
    import sys

    from ..anchorrotation import rotate_anchor
    from ._common import OperationFailed, acted, confirmed

    async with opened_context(args) as ctx:
        before = ctx.control.anchor.thumbprint
        if args.revoke_previous:
            print(f"--revoke-previous cuts anchor {before} out: agents pinned to it that start from now on refuse"
                  " to start until given the new anchor; agents running now move to it.", file=sys.stderr)
            if not confirmed(args.confirm, ctx.names.namespace):
                raise OperationFailed("not confirmed: nothing changed")

        async def rotate() -> tuple[str, list[Any]]:
            key, events = await rotate_anchor(ctx, revoke_previous=args.revoke_previous)
            return key.anchor.thumbprint, events

        after = await acted(ctx, rotate)
        seq = ctx.log.state.seq if ctx.log.state is not None else 0
    print(f"KEYHERALD_TRUST_ANCHOR={after}")
    print(f"rotated the trust anchor from {before} at seq {seq}: running agents follow it by themselves;"
          " pin the new one in deployments" + ("" if args.revoke_previous else
          " (agents pinned to the old one still start, through the chain)"), file=sys.stderr)
    return 0


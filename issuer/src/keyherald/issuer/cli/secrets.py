"""``keyherald kek`` and ``keyherald anchor``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ._common import add_parser, add_settings_flags, emit_json, opened_context

__all__ = ["register"]


def register(sub: Any) -> None:
    kek = add_parser(sub, "kek", "print a fresh key-encryption key (for KEYHERALD_KEK): 32 random bytes, base64url")
    kek.set_defaults(handler=_kek)
    anchor = add_parser(sub, "anchor", "print the trust anchor agents pin: the control key's public JWK and thumbprint")
    anchor.add_argument("--json", action="store_true", help="print {jwk, thumbprint} as JSON")
    add_settings_flags(anchor)
    anchor.set_defaults(handler=_anchor)


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

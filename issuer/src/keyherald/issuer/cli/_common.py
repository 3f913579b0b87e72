"""What every sub-command shares: settings flags, output."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from keyherald.shared.settings import load_settings

from ..settings import IssuerSettings

__all__ = ["Subparsers", "add_settings_flags", "emit_json", "settings_from"]

Subparsers = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (override KEYHERALD_* variables)")
    group.add_argument("--redis-url", help="KEYHERALD_REDIS_URL")
    group.add_argument("--namespace", help="KEYHERALD_NAMESPACE")
    group.add_argument("--issuer", help="KEYHERALD_ISSUER")
    group.add_argument("--kek-file", help="KEYHERALD_KEK_FILE")


def settings_from(args: argparse.Namespace, **extra: Any) -> IssuerSettings:
    flags = {
        "redis_url": getattr(args, "redis_url", None),
        "namespace": getattr(args, "namespace", None),
        "issuer": getattr(args, "issuer", None),
        "kek_file": getattr(args, "kek_file", None),
    }
    merged = {**flags, **{k: v for k, v in extra.items() if v is not None}}
    return load_settings(IssuerSettings, **merged)


def emit_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")

"""``keyherald backup FILE`` and ``keyherald restore FILE``: a namespace in one file, and back
(see keyherald.issuer.backup, and docs/operations.md for when to use which)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ._common import OperationFailed, add_parser, add_settings_flags, confirmed, opened_context, settings_from

__all__ = ["register"]


def register(sub: Any) -> None:
    backup = add_parser(
        sub, "backup",
        "write the namespace to FILE: the sealed control and signing keys, the clients and the signed log"
        " (nothing in it is usable without the KEK; safe against a live issuer)",
    )
    backup.add_argument("file", metavar="FILE", help="where to write it ('-': standard output)")
    add_settings_flags(backup)
    backup.set_defaults(handler=_backup)
    restore = add_parser(
        sub, "restore",
        "put a backup back on a namespace Redis lost, and start a new log from it: running agents keep every"
        " revocation they hold, fresh agents start from the backup",
    )
    restore.add_argument("file", metavar="FILE", help="a file `keyherald backup` wrote ('-': standard input)")
    restore.add_argument(
        "--older", action="store_true",
        help="this host's record knows a later point than the backup, and it is the newest backup there is:"
             " restore it anyway (revocations made after it are lost for agents that start from now on)",
    )
    restore.add_argument(
        "--confirm", metavar="NAMESPACE",
        help="with --older: the namespace's name, to confirm without the prompt (scripts)",
    )
    add_settings_flags(restore)
    restore.set_defaults(handler=_restore)


async def _backup(args: argparse.Namespace) -> int:
    from ..backup import take_backup

    async with opened_context(args) as ctx:
        backup = await take_backup(ctx)
    data = backup.to_bytes()
    if args.file == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        _write_private(Path(args.file), data)
    seq = backup.head.split(":")[1]
    print(f"backed up namespace {backup.namespace} at seq {seq}: {len(backup.signing_keys)} signing keys,"
          f" {len(backup.clients)} clients{'' if args.file == '-' else f', to {args.file}'}", file=sys.stderr)
    return 0


async def _restore(args: argparse.Namespace) -> int:
    from ..backup import Backup, restore_backup

    try:
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        raise OperationFailed(f"cannot read {args.file} ({exc.strerror})") from None
    backup = Backup.from_bytes(data)
    if args.older and not confirmed(args.confirm, backup.namespace):
        raise OperationFailed("not confirmed: nothing changed")
    state = await restore_backup(settings_from(args), backup, older=args.older)
    print(f"restored namespace {backup.namespace}: new log {state.log} at seq {state.seq}, from the backup of"
          f" seq {backup.head.split(':')[1]}; revocations made after the backup are lost for agents that start"
          " from now on (revoke them again)")
    return 0


def _write_private(path: Path, data: bytes) -> None:
    from keyherald.shared.files import replace_file

    try:
        replace_file(path, data)
    except OSError as exc:
        raise OperationFailed(f"cannot write {path} ({exc.strerror})") from None

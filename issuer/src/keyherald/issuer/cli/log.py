"""``keyherald log status`` and ``keyherald log accept``: the log in Redis, and the operator's
decision when a writer refuses it.

A writer refuses a log older than its local record (a rollback, a restored backup) and, with no
record, a log whose newest event is older than the freshness bound. Restarting the issuer
does not change that (it is the point). ``log accept`` is the one way to build on such a log:
it starts a new log from what Redis holds, linked to the furthest point this host's record
knows, revokes again every key the record saw revoked, and says first what will be lost.
Running agents lose nothing: they adopt the new log and keep every revocation they hold.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from ._common import OperationFailed, add_parser, add_settings_flags, emit_json, settings_from

if TYPE_CHECKING:
    from ..context import IssuerContext

__all__ = ["register"]


def register(sub: Any) -> None:
    group = add_parser(sub, "log", "the signed log in Redis: where it stands, and accepting an older one")
    actions = group.add_subparsers(dest="log_command", metavar="ACTION", required=True)
    status = add_parser(actions, "status", "the log Redis holds, this host's record of it, and whether a writer"
                        " would build on it")
    status.add_argument("--json", action="store_true", help="print it as JSON")
    add_settings_flags(status)
    status.set_defaults(handler=_status)
    accept = add_parser(
        actions, "accept",
        "start a new log from the (older or stale) log Redis holds: revocations made after it are lost"
        " for agents that start from now on",
    )
    accept.add_argument(
        "--confirm", metavar="NAMESPACE",
        help="the namespace's name, to confirm without the prompt (scripts); anything else refuses",
    )
    accept.add_argument(
        "--expect", metavar="LOG:SEQ",
        help="the log and seq you reviewed (`log status` prints them): refuse if Redis holds anything else now",
    )
    add_settings_flags(accept)
    accept.set_defaults(handler=_accept)


async def _open(args: argparse.Namespace) -> IssuerContext:
    from keyherald.shared.errors import SettingsError

    from ..context import IssuerContext
    from ..errors import KeyNotFound

    ctx = IssuerContext(settings_from(args), create=False)
    try:
        await ctx.open(sync=False)
    except KeyNotFound as exc:
        raise SettingsError("KEYHERALD_NAMESPACE", str(exc)) from None
    return ctx


def _ago(now: float, then: float) -> str:
    seconds = max(0, now - then)
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


async def _status(args: argparse.Namespace) -> int:
    from keyherald.shared.lineage import freshness_bound

    from ..logreader import read_log
    from ..recovery import Action, decide

    ctx = await _open(args)
    try:
        eventlog = ctx.log
        observed = await read_log(ctx.redis, ctx.names, ctx.control.anchor, ctx.settings.issuer)
        record = eventlog.record
        now = ctx.clock()
        seen = observed.state
        heartbeat = seen.heartbeat_interval if seen is not None else ctx.settings.heartbeat_interval
        decision = decide(observed, ours=None, record=record, now=now, freshness=freshness_bound(heartbeat),
                          left=record.left if record else ())
    finally:
        await ctx.close()
    verdict = {
        Action.FOLLOW: "a writer builds on it",
        Action.GENESIS: "empty: a writer starts the first log",
    }.get(decision.action, f"a writer refuses it: {decision.reason}")
    doc = {
        "namespace": ctx.names.namespace,
        "redis": None if seen is None else {
            "log": seen.log, "seq": seen.seq, "head": seen.head, "time": seen.time,
            "checkpoint_seq": observed.checkpoint_seq,
            "previous": seen.previous.model_dump(mode="json") if seen.previous else None,
        },
        "problem": observed.problem,
        "record": None if record is None else record.model_dump(mode="json"),
        "verdict": decision.action.value,
        "reason": decision.reason,
    }
    if args.json:
        emit_json(doc)
    else:
        if seen is None:
            print(f"Redis:  {'empty' if observed.empty else 'no log that verifies'}"
                  f"{f' ({observed.problem})' if observed.problem else ''}")
        else:
            print(f"Redis:  log {seen.log} seq {seen.seq}, newest event {_ago(now, seen.time)}"
                  f" (checkpoint at seq {observed.checkpoint_seq})")
            if observed.problem:
                print(f"        problem: {observed.problem}")
        if record is None:
            print("record: none on this host")
        else:
            print(f"record: log {record.log} seq {record.seq}, {_ago(now, record.time)};"
                  f" {len(record.revoked_kids)} revoked key(s) remembered")
        print(f"verdict: {verdict}")
        if seen is not None and decision.action is Action.REFUSE:
            print(f"to build on it anyway: keyherald log accept --expect {seen.log}:{seen.seq}")
    return 0 if decision.action in (Action.FOLLOW, Action.GENESIS) else 1


async def _accept(args: argparse.Namespace) -> int:
    from keyherald.shared.events import LogLink

    from ..logreader import read_log
    from ..rotation import Rotator

    ctx = await _open(args)
    try:
        namespace = ctx.names.namespace
        observed = await read_log(ctx.redis, ctx.names, ctx.control.anchor, ctx.settings.issuer)
        seen = observed.state
        if seen is None:
            raise OperationFailed(
                f"Redis holds no log that verifies ({observed.problem or 'empty'}): there is nothing to accept;"
                " restore a backup, or start the issuer on an empty namespace"
            )
        if args.expect is not None and args.expect != f"{seen.log}:{seen.seq}":
            raise OperationFailed(
                f"Redis holds log {seen.log}:{seen.seq} now, not {args.expect} (the one you reviewed): nothing"
                " changed; look again with `keyherald log status`"
            )
        record = ctx.log.record
        now = ctx.clock()
        print(f"Redis holds log {seen.log}:{seen.seq}; its newest event is from {_ago(now, seen.time)}.",
              file=sys.stderr)
        if record is not None:
            print(f"This host's record knows log {record.log} at seq {record.seq}, from {_ago(now, record.time)}.",
                  file=sys.stderr)
        print(
            "Accepting starts a new log from what Redis holds. Agents that run now keep every revocation they"
            " hold; agents that start from now on, and this issuer, lose any revocation of a token or subject"
            " made after that point (revoke them again). Keys the record saw revoked are revoked again.",
            file=sys.stderr,
        )
        if not _confirmed(args, namespace):
            raise OperationFailed("not confirmed: nothing changed")
        previous = LogLink(log=record.log, seq=record.seq, head=record.head, time=record.time) if record else None
        base = seen.copy()
        base.time = max(base.time, record.time if record else 0.0)
        state = await ctx.log.start_new_log(base, reason="accepted", previous=previous)
        rotator = Rotator(ctx)
        for _ in range(16):  # each forgotten revocation is one commit
            if not await rotator.tick():
                break
        state = await ctx.log.sync()
    finally:
        await ctx.close()
    print(f"accepted: new log {state.log}, seq {state.seq}")
    return 0


def _confirmed(args: argparse.Namespace, namespace: str) -> bool:
    if args.confirm is not None:
        return bool(args.confirm == namespace)
    if not sys.stdin.isatty():
        print("keyherald: not a terminal: pass --confirm NAMESPACE to confirm", file=sys.stderr)
        return False
    print(f"Type the namespace ({namespace}) to confirm: ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip() == namespace

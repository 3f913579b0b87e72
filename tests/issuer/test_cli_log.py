"""A rolled-back log meets the ``keyherald`` command: refused, shown, and accepted only on purpose."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from keyherald.issuer.context import IssuerContext
from keyherald.issuer.settings import IssuerSettings
from keyherald.shared.connect import sync_client
from keyherald.shared.names import Names
from keyherald.shared.state import State

Cli = Callable[..., tuple[int, str, str]]

pytestmark = pytest.mark.redis


def _state(settings: IssuerSettings) -> State:
    async def read() -> State:
        ctx = IssuerContext(settings.model_copy(update={"state_dir": None}))
        await ctx.open(sync=False)
        try:
            from keyherald.issuer.logreader import read_log

            observed = await read_log(ctx.redis, ctx.names, ctx.control.anchor, settings.issuer)
            assert observed.state is not None
            return observed.state
        finally:
            await ctx.close()

    return asyncio.run(read())


def _checkpoint(settings: IssuerSettings) -> None:
    async def write() -> None:
        async with IssuerContext(settings) as ctx:
            await ctx.log.checkpoint(force=True)

    asyncio.run(write())


def test_a_rolled_back_log_is_refused_until_an_operator_accepts_it(env: IssuerSettings, cli: Cli) -> None:
    names = Names(env.namespace)
    redis = sync_client(env.redis_url)
    try:
        _checkpoint(env)
        saved = redis.mget(names.snapshot, names.head)
        before = _state(env)
        leaked = before.active_key
        assert leaked is not None
        code, out, _ = cli("revoke", "subject", "orders", "--force")
        assert code == 0
        code, _, _ = cli("revoke", "key", leaked.kid)
        assert code == 0
        head = _state(env)
        assert "orders" in head.revoked_subjects and head.keys[leaked.kid].state == "revoked"

        # Someone who can write Redis puts the log back as it was before both revocations.
        redis.mset({names.snapshot: saved[0], names.head: saved[1]})
        redis.delete(names.events)

        code, _, err = cli("revoke", "subject", "billing", "--force")
        assert code == 1 and "older than this host's record" in err and "keyherald log accept" in err
        assert err.count("\n") == 1
        assert redis.get(names.head) == saved[1]  # nothing appended on the old log

        code, out, _ = cli("log", "status")
        assert code == 1 and f"seq {before.seq}" in out and f"seq {head.seq}" in out and "refuses" in out

        code, _, err = cli("log", "accept", "--confirm", "not-the-namespace")
        assert code == 1 and "not confirmed" in err
        assert redis.get(names.head) == saved[1]

        expect = f"{before.log}:{before.seq}"
        assert f"log accept --expect {expect}" in out
        code, _, err = cli("log", "accept", "--confirm", env.namespace, "--expect", f"{before.log}:{before.seq + 1}")
        assert code == 1 and f"holds log {expect} now" in err  # not the point the operator reviewed
        assert redis.get(names.head) == saved[1]

        code, out, err = cli("log", "accept", "--confirm", env.namespace, "--expect", expect)
        assert code == 0 and "accepted: new log" in out and "lose any revocation" in err
        accepted = _state(env)
        assert accepted.log != before.log
        assert accepted.previous is not None and accepted.previous.seq == head.seq
        # The key the record saw revoked is revoked again: it never signs in the new log.
        assert accepted.keys[leaked.kid].state == "revoked"
        assert accepted.active_key is not None and accepted.active_key.kid != leaked.kid

        code, out, _ = cli("revoke", "subject", "billing", "--force")
        assert code == 0 and "billing" in _state(env).revoked_subjects
        code, out, _ = cli("log", "status")
        assert code == 0 and "a writer builds on it" in out
    finally:
        redis.close()


def test_a_stale_log_is_refused_by_a_writer_with_no_record(
    bare_env: IssuerSettings, cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No record on this host (an operator's laptop), and no event for two minutes: it may be
    a rolled-back copy, so the command refuses to build on it; a writer that knows it does not."""
    import time

    from keyherald.issuer.rotation import Rotator
    from keyherald.shared.clock import ManualClock

    async def genesis_two_minutes_ago() -> None:
        async with IssuerContext(bare_env, clock=ManualClock(time.time() - 120)) as ctx:
            await Rotator(ctx).tick()

    asyncio.run(genesis_two_minutes_ago())
    monkeypatch.setenv("KEYHERALD_STATE_DIR", str(tmp_path))  # a host that never saw this log
    code, _, err = cli("revoke", "subject", "orders", "--force")
    assert code == 1 and re.search(r"is 1[12]\ds old and this host has no record of the log", err)
    monkeypatch.setenv("KEYHERALD_STATE_DIR", str(bare_env.state_dir))  # the host that wrote it
    code, out, _ = cli("revoke", "subject", "orders", "--force")
    assert code == 0 and "seq" in out

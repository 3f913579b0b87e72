"""``keyherald clients ...`` and ``keyherald revoke ...``, in process against a real server."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from keyherald.issuer.context import IssuerContext
from keyherald.issuer.rotation import Rotator
from keyherald.issuer.settings import IssuerSettings
from keyherald.issuer.tokens import sign_token
from keyherald.shared.state import State

Cli = Callable[..., tuple[int, str, str]]

pytestmark = pytest.mark.redis


def _state(settings: IssuerSettings) -> State:
    async def read() -> State:
        async with IssuerContext(settings) as ctx:
            return await ctx.log.read_state()

    return asyncio.run(read())


def test_create_prints_the_secret_once_and_it_authenticates(env: IssuerSettings,
                                                            cli: Cli) -> None:
    code, out, _ = cli("clients", "create", "orders", "--audience", "inventory", "--audience", "payments",
                       "--scope", "inventory:read", "--ttl", "2m", "--json")
    assert code == 0
    created = json.loads(out)
    assert set(created) == {"client_id", "client_secret"}
    assert created["client_id"] == "orders" and created["client_secret"].startswith("khs_")

    async def check() -> None:
        async with IssuerContext(env) as ctx:
            registry = ctx.clients()
            client = await registry.authenticate("orders", created["client_secret"])
            assert client is not None and client.ttl == 120 and client.audiences == ("inventory", "payments")
            assert await registry.authenticate("orders", "khs_wrong") is None

    asyncio.run(check())
    code, out, _ = cli("clients", "list", "--json")
    listed = json.loads(out)
    assert [c["client_id"] for c in listed] == ["orders"]
    assert created["client_secret"] not in out and "secret_hash" not in out
    code, out, _ = cli("clients", "list")
    assert "orders" in out and "enabled" in out and "inventory,payments" in out


def test_create_twice_and_bad_input_are_one_line_errors(env: IssuerSettings,
                                                        cli: Cli) -> None:
    assert cli("clients", "create", "orders", "--audience", "inventory")[0] == 0
    code, _, err = cli("clients", "create", "orders", "--audience", "inventory")
    assert code != 0 and err.count("\n") == 1 and "exists already" in err
    code, _, err = cli("clients", "create", "bad name", "--audience", "x")
    assert code != 0 and err.count("\n") == 1 and "Traceback" not in err
    code, _, err = cli("clients", "create", "x", "--audience", "inv", "--scope", 'a"b')
    assert code != 0 and "scope" in err
    code, _, err = cli("clients", "create", "x", "--audience", "inv", "--ttl", "soon")
    assert code != 0 and "duration" in err
    code, _, err = cli("clients", "disable", "nobody")
    assert code != 0 and "no client 'nobody'" in err


def test_disable_and_rotate_secret(env: IssuerSettings, cli: Cli) -> None:
    _, out, _ = cli("clients", "create", "orders", "--audience", "inventory", "--json")
    old = json.loads(out)["client_secret"]
    code, out, _ = cli("clients", "rotate-secret", "orders", "--json")
    new = json.loads(out)["client_secret"]
    assert code == 0 and new != old
    code, out, _ = cli("clients", "disable", "orders")
    assert code == 0 and "revoke subject orders" in out

    async def check() -> None:
        async with IssuerContext(env) as ctx:
            registry = ctx.clients()
            assert await registry.authenticate("orders", old) is None
            client = await registry.authenticate("orders", new)
            assert client is not None and client.disabled

    asyncio.run(check())
    assert "disabled" in cli("clients", "list")[1]


def test_revoke_subject_key_and_token_print_their_seq(env: IssuerSettings, cli: Cli,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    async def genesis_and_token() -> str:
        async with IssuerContext(env) as ctx:
            await Rotator(ctx).tick()
            state = await ctx.log.read_state()
            assert state.active_key is not None
            key = await ctx.keystore.get(state.active_key.kid)
            now = int(ctx.clock())
            claims = {"iss": env.issuer, "sub": "orders", "aud": "inventory", "iat": now, "nbf": now,
                      "exp": now + 60, "jti": "jti-from-token", "client_id": "orders"}
            return sign_token(claims, key)

    token = asyncio.run(genesis_and_token())
    seq = _state(env).seq
    # No client named orders is registered: a typo must not "succeed" and revoke nothing real.
    code, out, err = cli("revoke", "subject", "orders")
    assert code == 1 and out == "" and "no registered client is named 'orders'" in err and "--force" in err
    assert _state(env).seq == seq and "orders" not in _state(env).revoked_subjects
    # A deleted client's tokens may live on: --force revokes the subject anyway.
    code, out, err = cli("revoke", "subject", "orders", "--force")
    assert code == 0 and out.strip().endswith(f"seq {seq + 1}") and "no registered client" in err
    assert "orders" in _state(env).revoked_subjects

    soon = int(time.time()) + 120
    iso = datetime.fromtimestamp(soon, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    code, out, _ = cli("revoke", "token", "--jti", "abc", "--expires-at", iso, "--json")
    assert code == 0 and json.loads(out) == {"seq": seq + 2}
    assert _state(env).revoked_tokens["abc"] == soon
    code, out, _ = cli("revoke", "token", "--jti", "def", "--expires-at", "1893456000")  # 2030
    # No token outlives now + the token TTL (5 m): remembering it longer would be for nothing.
    assert code == 0 and _state(env).revoked_tokens["def"] <= int(time.time()) + 300

    monkeypatch.setattr("sys.stdin", io.StringIO(token + "\n"))  # '-': kept off argv
    code, out, _ = cli("revoke", "token", "--token", "-")
    assert code == 0 and "jti-from-token" in out and "jti-from-token" in _state(env).revoked_tokens

    active = _state(env).active_key
    assert active is not None
    code, out, err = cli("revoke", "key", active.kid)
    state = _state(env)
    assert code == 0 and out.strip().endswith(f"seq {state.seq}"), err
    assert state.keys[active.kid].state == "revoked"
    assert state.active_key is not None and state.active_key.kid != active.kid


def test_revoke_bad_input_is_a_one_line_error(env: IssuerSettings, cli: Cli) -> None:
    cases = [
        ("revoke", "token", "--jti", "abc"),
        ("revoke", "token", "--token", "not-a-token"),
        ("revoke", "key", "no-such-kid"),
    ]
    for argv in cases:
        code, _, err = cli(*argv)
        assert code != 0 and err.count("\n") == 1 and "Traceback" not in err, argv
        assert "not-a-token" not in err
    code, _, err = cli("revoke", "token", "--jti", "a", "--expires-at", "yesterday")
    assert code == 2 and "ISO 8601" in err


def test_revoke_subject_of_a_registered_client_needs_no_force(env: IssuerSettings, cli: Cli) -> None:
    assert cli("clients", "create", "orders", "--audience", "inventory")[0] == 0
    code, out, err = cli("revoke", "subject", "orders", "--json")
    # No replica runs here: nobody can witness the change, and the command says so.
    assert code == 0 and json.loads(out)["seq"] == _state(env).seq and "no --force" not in err
    assert err.startswith("note: no issuer replica is running to witness it")
    code, _, err = cli("revoke", "subject", "ordres")  # the typo of the issue
    assert code == 1 and "'ordres'" in err and "ordres" not in _state(env).revoked_subjects


def test_revoke_a_jti_file_revokes_every_token_or_none(env: IssuerSettings, cli: Cli, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """An incident: thousands of jtis from a log, one request. A bad line anywhere revokes
    nothing and names the line, so the operator fixes the file and runs it again."""
    soon = int(time.time()) + 120
    iso = datetime.fromtimestamp(soon, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    good = tmp_path / "jtis.txt"
    good.write_text("# from the proxy's log\n" + "".join(f"bulk-{i} {soon}\n" for i in range(5000))
                    + f"\nbulk-iso {iso}\nbulk-old 1000\n")
    bad = tmp_path / "bad.txt"
    bad.write_text(f"fine-1 {soon}\nno-expiry\nfine-2 tomorrow\nfine-3 {soon} extra\n")
    assert cli("revoke", "token", "--jti", "first", "--expires-at", str(soon))[0] == 0
    seq = _state(env).seq

    code, out, err = cli("revoke", "token", "--jti-file", str(bad))
    assert code != 0 and out == "" and "Traceback" not in err
    assert "3 bad line(s)" in err and "line 2:" in err and "line 3:" in err and "line 4:" in err
    assert "line 1:" not in err and "nothing was revoked" in err
    assert _state(env).seq == seq and "fine-1" not in _state(env).revoked_tokens

    code, out, err = cli("revoke", "token", "--jti-file", str(good), "--json")
    assert code == 0, err
    state = _state(env)
    assert json.loads(out)["seq"] == state.seq > seq
    assert all(f"bulk-{i}" in state.revoked_tokens for i in range(5000))
    assert state.revoked_tokens["bulk-iso"] == soon and "bulk-old" not in state.revoked_tokens
    assert len(state.revoked_tokens) == 5002  # first, 5000 and the ISO one

    monkeypatch.setattr("sys.stdin", io.StringIO(f"from-stdin {soon}\n"))
    code, out, _ = cli("revoke", "token", "--jti-file", "-")
    assert code == 0 and "1 tokens" in out and "from-stdin" in _state(env).revoked_tokens

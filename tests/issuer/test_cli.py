"""The keyherald command: data as JSON, one-line errors naming the setting, --help everywhere."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from keyherald.issuer.cli import build_parser
from keyherald.issuer.settings import IssuerSettings

Cli = Callable[..., tuple[int, str, str]]


@pytest.mark.redis
def test_admin_commands_refuse_a_namespace_no_issuer_started(bare_env: IssuerSettings, cli: Cli) -> None:
    code, _, err = cli("keys", "list")
    assert code == 2 and "has no control key: it was never prepared" in err and "KEYHERALD_NAMESPACE" in err
    code, _, err = cli("anchor")
    assert code == 2 and "it was never prepared" in err


@pytest.mark.redis
def test_issuer_init_prepares_a_namespace_once(bare_env: IssuerSettings, cli: Cli) -> None:
    code, out, _ = cli("issuer", "init")
    anchor = re.search(r"KEYHERALD_TRUST_ANCHOR=([A-Za-z0-9_-]{43})", out)
    assert code == 0 and anchor and "4 events appended" in out
    code, out, _ = cli("issuer", "init")
    assert code == 0 and f"KEYHERALD_TRUST_ANCHOR={anchor.group(1)}" in out and "ready already" in out
    code, out, _ = cli("keys", "list", "--json")
    assert code == 0 and sorted(k["state"] for k in json.loads(out)) == ["active", "published"]


@pytest.mark.redis
def test_keys_list_json_and_rotate(env: IssuerSettings, cli: Cli) -> None:
    code, out, _ = cli("keys", "rotate")
    assert code == 0 and "seq 8" in out  # genesis took 1-5; a rotation appends 3
    code, out, _ = cli("keys", "list", "--json")
    keys = json.loads(out)
    assert code == 0 and sorted(k["state"] for k in keys) == ["active", "published", "retired"]
    assert all({"kid", "alg", "state", "published_at", "activated_at", "expires_at"} <= k.keys() for k in keys)
    code, out, _ = cli("keys", "rotate", "--emergency")
    assert code == 0 and "emergency" in out
    code, out, _ = cli("keys", "list")
    assert code == 0 and "revoked" in out and "active" in out and "published" in out


@pytest.mark.redis
@pytest.mark.parametrize(("control_key_alg", "kty"), [("PS256", "RSA"), ("EdDSA", "OKP")])
def test_anchor_prints_the_control_key(env: IssuerSettings, cli: Cli, control_key_alg: str, kty: str) -> None:
    code, out, _ = cli("anchor", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["jwk"]["kty"] == kty and doc["jwk"]["alg"] == control_key_alg
    assert doc["jwk"]["kid"] == doc["thumbprint"]
    assert "d" not in doc["jwk"]
    code, out, _ = cli("anchor")
    assert f"KEYHERALD_TRUST_ANCHOR={doc['thumbprint']}" in out


def test_kek_prints_a_fresh_32_byte_key(cli: Cli) -> None:
    _, first, _ = cli("kek")
    _, second, _ = cli("kek")
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}\n", first) and first != second


@pytest.mark.redis
@pytest.mark.parametrize(
    "variable, value, message",
    [
        ("KEYHERALD_ROTATION_PERIOD", "5x", "KEYHERALD_ROTATION_PERIOD: '5x' is not a duration"),
        ("KEYHERALD_TOKEN_TTL", "-1", "KEYHERALD_TOKEN_TTL"),
        ("KEYHERALD_ALGORITHM", "HS256", "KEYHERALD_ALGORITHM"),
        ("KEYHERALD_ALGORITHM", "PS256", "KEYHERALD_ALGORITHM"),  # the control key's, never a token's
        ("KEYHERALD_CONTROL_KEY_ALG", "RS256", "KEYHERALD_CONTROL_KEY_ALG"),
        ("KEYHERALD_KEK", "c2hvcnQ", "KEYHERALD_KEK: must decode to 32 bytes"),
        ("KEYHERALD_KEK", "not base64!", "KEYHERALD_KEK: is not base64url"),
        ("KEYHERALD_REDIS_URL", "redis://127.0.0.1:1/0", "KEYHERALD_REDIS_URL: cannot reach Redis"),
        ("KEYHERALD_REDIS_URL", "http://x", "KEYHERALD_REDIS_URL"),
        ("KEYHERALD_NAMESPACE", "a b", "KEYHERALD_NAMESPACE"),
    ],
)
def test_bad_settings_give_one_line_naming_the_setting(
    env: IssuerSettings, cli: Cli, monkeypatch: pytest.MonkeyPatch,
    variable: str, value: str, message: str,
) -> None:
    monkeypatch.setenv(variable, value)
    code, _out, err = cli("keys", "list")
    assert code != 0
    assert err.startswith("keyherald: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.redis
def test_a_wrong_kek_is_named(env: IssuerSettings, cli: Cli,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    _, other, _ = cli("kek")
    monkeypatch.setenv("KEYHERALD_KEK", other.strip())
    code, _, err = cli("keys", "list")
    assert code == 2 and "KEYHERALD_KEK: does not decrypt" in err and other.strip() not in err


def test_missing_kek_says_how_to_make_one(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("KEYHERALD_")]:
        monkeypatch.delenv(name)
    code, _, err = cli("keys", "list")
    assert code == 2 and "KEYHERALD_KEK: is not set" in err and "keyherald kek" in err


def test_every_command_has_help(cli: Cli) -> None:
    parser = build_parser()
    stack = [((), parser)]
    seen = []
    while stack:
        path, node = stack.pop()
        code, out, _ = cli(*path, "--help")
        assert code == 0 and "usage: keyherald" in out
        seen.append(" ".join(path))
        for action in node._actions:
            if hasattr(action, "choices") and isinstance(action.choices, dict):
                stack.extend(((*path, name), sub) for name, sub in action.choices.items())
    assert {"dev", "issuer run", "issuer init", "anchor", "kek", "keys list", "keys rotate"} <= set(seen)


def test_keyherald_dev_runs_and_prints_connection_details(tmp_path: Path) -> None:
    """The README's first command, as a user runs it: an embedded Valkey, no other server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYHERALD_")}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from keyherald.issuer.cli import main; main()", "dev",
         "--http-port", "0", "--redis-port", "0", "--dir", str(tmp_path / "dev")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C stops" in line:
                break
        text = "".join(lines)
        assert "keyherald dev is running" in text, text
        assert re.search(r"KEYHERALD_REDIS_URL=redis://127\.0\.0\.1:\d+/0", text)
        assert re.search(r"KEYHERALD_TRUST_ANCHOR=[A-Za-z0-9_-]{43}", text)
        assert "KEYHERALD_ISSUER=http://127.0.0.1:" in text
        env_file = (tmp_path / "dev" / "env").read_text()
        assert "export KEYHERALD_KEK_FILE=" in env_file
        assert (tmp_path / "dev" / "kek").stat().st_mode & 0o077 == 0  # the KEK file is private
    finally:
        proc.send_signal(signal.SIGTERM)  # as a process manager stops it; Ctrl-C takes the same path
        proc.wait(timeout=20)
    assert proc.returncode == 0
    port = int(re.search(r"KEYHERALD_REDIS_URL=redis://127\.0\.0\.1:(\d+)/0", "".join(lines)).group(1))  # type: ignore[union-attr]
    with pytest.raises(OSError):  # the embedded Valkey stopped with it
        socket.create_connection(("127.0.0.1", port), timeout=1).close()

"""``keyherald dev`` as a newcomer uses it: restarts on any port keep the anchor, the clients and
the issuer id; a bad setting or a busy port is one line naming what to change."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

KEYHERALD = [sys.executable, "-c", "from keyherald.issuer.cli import main; main()"]
LIVENESS = 60.0
"""A bound on a hang (the first start makes an RSA-3072 control key), not a speed."""


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYHERALD_")}
    return {**env, **extra}


@contextmanager
def dev(directory: Path, *flags: str) -> Iterator[str]:
    """A running ``keyherald dev``; yields what it printed up to 'Ctrl-C stops'."""
    proc = subprocess.Popen([*KEYHERALD, "dev", "--redis-port", "0", "--dir", str(directory), *flags],
                            env=_clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=directory.parent)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + LIVENESS
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C stops" in line:
                break
        text = "".join(lines)
        assert "keyherald dev is running" in text, text
        yield text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0


def _env_file(directory: Path) -> dict[str, str]:
    pairs = (line.removeprefix("export ").split("=", 1) for line in (directory / "env").read_text().splitlines())
    return dict(pairs)


def _keyherald(env: dict[str, str], *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KEYHERALD, *argv], env=_clean_env(**env), input=stdin, capture_output=True, text=True,
                          timeout=LIVENESS, check=False)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _anchor(text: str) -> str:
    found = re.search(r"KEYHERALD_TRUST_ANCHOR=([A-Za-z0-9_-]{43})", text)
    assert found, text
    return found.group(1)


def test_a_restart_on_another_port_keeps_anchor_clients_and_issuer_id(tmp_path: Path) -> None:
    """It failed with "namespace belongs to issuer ...:18093, not ...:18094"; a folder first
    started with --http-port 0 could never restart."""
    folder = tmp_path / "dev"
    first_port = _free_port()
    with dev(folder, "--http-port", str(first_port)) as text:
        anchor = _anchor(text)
        issuer = f"http://127.0.0.1:{first_port}"
        assert f"KEYHERALD_ISSUER={issuer}\n" in text
        env = _env_file(folder)
        assert env["KEYHERALD_TOKEN_URL"] == f"http://127.0.0.1:{first_port}/token"
        created = _keyherald(env, "clients", "create", "orders", "--audience", "inventory", "--json")
        assert created.returncode == 0, created.stderr
    assert (folder / "issuer").read_text().strip() == issuer

    with dev(folder, "--http-port", "0") as text:  # any free port
        assert _anchor(text) == anchor and f"KEYHERALD_ISSUER={issuer}\n" in text
        env = _env_file(folder)
        port = int(env["KEYHERALD_HTTP_PORT"])
        assert port != first_port and env["KEYHERALD_TOKEN_URL"] == f"http://127.0.0.1:{port}/token"
        assert env["KEYHERALD_ISSUER"] == issuer
        listed = _keyherald(env, "clients", "list", "--json")
        assert listed.returncode == 0 and '"orders"' in listed.stdout
        # The client's secret still gets a token at the new port, through the env file's token URL.
        token = _keyherald(env, "token", "orders", "--secret-file", "-", stdin=created.stdout)
        assert token.returncode == 0, token.stderr
        assert re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+\n", token.stdout)


def test_another_issuer_for_a_started_folder_is_refused_naming_the_flag(tmp_path: Path) -> None:
    folder = tmp_path / "dev"
    with dev(folder, "--http-port", "0"):
        pass
    done = _keyherald({}, "dev", "--dir", str(folder), "--redis-port", "0", "--http-port", "0",
                      "--issuer", "https://elsewhere.test")
    assert done.returncode == 2 and done.stderr.startswith("keyherald: error: --issuer: ")
    assert "fixed at its first start" in done.stderr and done.stderr.count("\n") == 1


def test_a_bad_setting_is_one_line_naming_it(tmp_path: Path) -> None:
    done = subprocess.run([*KEYHERALD, "dev", "--dir", str(tmp_path / "dev"), "--redis-port", "0"],
                          env=_clean_env(KEYHERALD_ROTATION_PERIOD="5x"), capture_output=True, text=True,
                          timeout=LIVENESS, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr == "keyherald: error: KEYHERALD_ROTATION_PERIOD: '5x' is not a duration" \
        " (use seconds or forms like 30s, 5m, 24h, 1h30m)\n"


@pytest.mark.parametrize("flag", ["--http-port", "--redis-port"])
def test_a_busy_port_names_the_flag_that_changes_it(tmp_path: Path, flag: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        ports = {"--http-port": "0", "--redis-port": "0", flag: port}
        done = _keyherald({}, "dev", "--dir", str(tmp_path / "dev"), *(x for kv in ports.items() for x in kv))
    assert done.returncode == 2 and f"{flag}: port {port} is in use" in done.stderr
    assert f"{flag} N" in done.stderr and done.stderr.count("\n") == 1

"""What every ``keyherald`` command shares: one exit-code convention, --version, a description
in each --help, and an admin path that loads neither the worker nor the HTTP server."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import pytest

from keyherald.issuer.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, build_parser, exit_code
from keyherald.issuer.cli._common import OperationFailed
from keyherald.issuer.errors import ClientNotFound, KeyNotFound, NamespaceOwnedElsewhere
from keyherald.issuer.settings import IssuerSettings
from keyherald.shared.errors import SettingsError

Cli = Callable[..., tuple[int, str, str]]


@pytest.mark.redis
def test_exit_codes_follow_one_convention(env: IssuerSettings, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """0 done, 1 the operation failed, 2 bad usage or settings: the same kind of failure gets
    the same code from every command."""
    assert cli("clients", "create", "orders", "--audience", "inventory")[0] == EXIT_OK
    failed = [
        ("clients", "create", "orders", "--audience", "inventory"),  # exists already
        ("clients", "disable", "nobody"),
        ("clients", "rotate-secret", "nobody"),
        ("revoke", "key", "no-such-kid"),
        ("revoke", "subject", "nobody"),
    ]
    usage = [
        (),                                                       # no command
        ("revoke",),                                              # no WHAT
        ("revoke", "token", "--jti", "abc"),                     # --expires-at missing
        ("revoke", "token", "--jti", "a", "--expires-at", "yesterday"),
        ("revoke", "token", "--token", "not-a-token"),            # not a token of ours
        ("clients", "create", "bad name", "--audience", "x"),
        ("clients", "create", "x", "--audience", "inv", "--ttl", "soon"),
        ("keys", "list", "--no-such-flag"),
    ]
    for argv in failed:
        code, _, err = cli(*argv)
        assert code == EXIT_FAILED and err.startswith("keyherald: error: "), argv
    for argv in usage:
        code, _, err = cli(*argv)
        assert code == EXIT_USAGE and "Traceback" not in err, argv
    for variable, value in (("KEYHERALD_NAMESPACE", "nobody-ran-here"), ("KEYHERALD_ISSUER", "https://other.test"),
                            ("KEYHERALD_REDIS_URL", "redis://127.0.0.1:1/0"), ("KEYHERALD_TOKEN_TTL", "-1")):
        with monkeypatch.context() as patch:
            patch.setenv(variable, value)
            code, _, err = cli("keys", "list")
            assert code == EXIT_USAGE and err.count("\n") == 1, (variable, err)
    assert cli("keys", "list", "--json")[0] == EXIT_OK


def test_the_code_of_each_kind_of_error() -> None:
    assert exit_code(SettingsError("KEYHERALD_KEK", "is not set")) == EXIT_USAGE
    assert exit_code(NamespaceOwnedElsewhere("another issuer's")) == EXIT_USAGE
    assert exit_code(ValueError("jti must be 1-256 characters")) == EXIT_USAGE
    assert exit_code(ClientNotFound("nobody")) == EXIT_FAILED
    assert exit_code(KeyNotFound("kid")) == EXIT_FAILED
    assert exit_code(OperationFailed("the token endpoint refused")) == EXIT_FAILED
    assert exit_code(ConnectionResetError()) == EXIT_FAILED


def test_version(cli: Cli) -> None:
    code, out, _ = cli("--version")
    assert code == 0 and out.startswith("keyherald 0.") and out.count("\n") == 1


def test_every_command_describes_itself() -> None:
    """`keyherald kek --help` and `dev --help` said nothing of what they do; `issuer --help`
    said 'run the issuer worker' of a group that also holds init."""
    stack = [("keyherald", build_parser())]
    seen = {}
    while stack:
        path, parser = stack.pop()
        seen[path] = parser.description or ""
        for action in parser._actions:
            if isinstance(getattr(action, "choices", None), dict):
                stack.extend((f"{path} {name}", sub) for name, sub in action.choices.items())
    assert all(seen.values()), [path for path, text in seen.items() if not text]
    assert "init" in seen["keyherald issuer"] or "prepare" in seen["keyherald issuer"]
    assert {"keyherald kek", "keyherald dev", "keyherald token", "keyherald revoke subject"} <= set(seen)


def test_dev_help_names_its_default_ports(cli: Cli) -> None:
    _, out, _ = cli("dev", "--help")
    assert "6399" in out and "8080" in out


@pytest.mark.redis
def test_revoke_loads_neither_the_worker_nor_the_http_server(env: IssuerSettings) -> None:
    """The command an operator runs in an incident: what it does not import it does not wait for."""
    probe = (
        "import sys\nfrom keyherald.issuer.cli import main\n"
        "try:\n    main(['revoke', 'subject', 'orders', '--force', '--json'])\n"
        "except SystemExit as e:\n    code = e.code\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'fastapi', 'starlette', 'uvicorn', 'faststream'})\n"
        "print(code, heavy, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert done.stderr.strip().splitlines()[-1] == "0 []", done.stderr
    assert json.loads(done.stdout)["seq"] > 0


def test_an_identifier_that_starts_with_a_dash_is_a_value_not_an_option() -> None:
    """One kid or jti in 64 starts with '-' (base64url): `revoke key -x...` used to be refused
    as an unknown option (exit 2), one key revocation in 64."""
    parser = build_parser()
    kid = "-Jq3VnB0cYk9m8rT1pWzQ2xL5sHdE7uFgAaIoNlKbC4"
    assert parser.parse_args(["revoke", "key", kid]).kid == kid
    with_h = "-hAbc3VnB0cYk9m8rT1pWzQ2xL5sHdE7uFgAaIoNlKb"  # not -h (help) with a value
    assert parser.parse_args(["revoke", "key", with_h]).kid == with_h
    args = parser.parse_args(["revoke", "token", "--jti", "-f3Kx9Lm2Qa7Zp1Rt8Yw", "--expires-at", "1893456000"])
    assert args.jti == "-f3Kx9Lm2Qa7Zp1Rt8Yw"
    assert parser.parse_args(["anchor", "rotate", "--revoke-previous"]).revoke_previous
    with pytest.raises(SystemExit):
        parser.parse_args(["revoke", "key", kid, "--no-such-flag"])

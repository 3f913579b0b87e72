"""Fixtures for driving the ``keyherald`` command in process, as an operator would."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import pytest

from keyherald.issuer.cli import main
from keyherald.issuer.context import IssuerContext
from keyherald.issuer.rotation import Rotator
from keyherald.issuer.settings import IssuerSettings

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """Run ``keyherald ARGV...``; returns (exit code, stdout, stderr)."""

    def run(*argv: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exit_info:
            main(list(argv))
        out, err = capsys.readouterr()
        return int(exit_info.value.code or 0), out, err

    return run


@pytest.fixture
def bare_env(issuer_settings: IssuerSettings, monkeypatch: pytest.MonkeyPatch) -> IssuerSettings:
    """The issuer's settings in KEYHERALD_* variables, for a namespace no issuer ran in yet."""
    assert issuer_settings.kek is not None
    for name in [k for k in os.environ if k.startswith("KEYHERALD_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("KEYHERALD_REDIS_URL", issuer_settings.redis_url)
    monkeypatch.setenv("KEYHERALD_NAMESPACE", issuer_settings.namespace)
    monkeypatch.setenv("KEYHERALD_ISSUER", issuer_settings.issuer)
    monkeypatch.setenv("KEYHERALD_KEK", issuer_settings.kek.get_secret_value())
    monkeypatch.setenv("KEYHERALD_CONTROL_KEY_ALG", issuer_settings.control_key_alg)
    return issuer_settings


@pytest.fixture
def env(bare_env: IssuerSettings) -> IssuerSettings:
    """As ``bare_env``, after the first issuer started there (control key, genesis keys)."""

    async def genesis() -> None:
        async with IssuerContext(bare_env) as ctx:
            await Rotator(ctx).tick()

    asyncio.run(genesis())
    return bare_env

"""Issuer settings refuse what would be published wrongly for good: KEYHERALD_ISSUER is baked
into every token, the RFC 8414 metadata and the namespace's signed log."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from keyherald.issuer.settings import IssuerSettings, is_loopback_url
from keyherald.shared.clock import ManualClock
from keyherald.shared.errors import SettingsError
from keyherald.shared.settings import load_settings
from tests.tokenservice import running_issuer

Cli = Callable[..., tuple[int, str, str]]


@pytest.mark.parametrize("issuer", [
    "127.0.0.1:8080",                   # no scheme: was published as token_endpoint "127.0.0.1:8080/token"
    "issuer.example.com",
    "ftp://issuer.example.com",
    "https://",
    "https://issuer.example.com/?tenant=a",  # RFC 8414 §2: no query
    "https://issuer.example.com/#x",         # ... and no fragment
    "https://issuer.example.com/?",
    "https://user:pass@issuer.example.com",
    "https://issuer.example.com:99999",
    "https://issuer example.com",
])
def test_an_issuer_that_is_not_an_absolute_http_url_is_refused(issuer: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(IssuerSettings, issuer=issuer, _env_file=None)
    assert error.value.setting == "KEYHERALD_ISSUER"


@pytest.mark.parametrize("issuer", [
    "https://issuer.example.com", "https://issuer.example.com/tenants/a", "http://127.0.0.1:8080",
    "http://localhost:8080/", "https://[::1]:8443",
])
def test_absolute_http_urls_are_accepted(issuer: str) -> None:
    assert load_settings(IssuerSettings, issuer=issuer, _env_file=None).issuer == issuer


def test_loopback_is_told_apart() -> None:
    assert is_loopback_url("http://127.0.0.1:8080") and is_loopback_url("http://localhost:1")
    assert is_loopback_url("http://[::1]:80") and is_loopback_url("http://dev.localhost")
    assert not is_loopback_url("http://issuer:8080") and not is_loopback_url("http://10.0.0.1")


@pytest.mark.redis
def test_a_bad_issuer_is_one_line_naming_it(env: IssuerSettings, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYHERALD_ISSUER", "127.0.0.1:8080")
    code, _, err = cli("keys", "list")
    assert code == 2 and err.startswith("keyherald: error: KEYHERALD_ISSUER: must be an absolute http(s) URL")
    assert err.count("\n") == 1


def test_trusted_proxies_are_ips_or_networks() -> None:
    settings = load_settings(IssuerSettings, trusted_proxies=" 10.0.0.0/8 , 192.0.2.1,::1 ", _env_file=None)
    assert settings.trusted_proxy_list == ["10.0.0.0/8", "192.0.2.1", "::1"]
    assert load_settings(IssuerSettings, _env_file=None).trusted_proxy_list == []  # none by default
    with pytest.raises(SettingsError, match=r"KEYHERALD_TRUSTED_PROXIES: 'proxy\.internal' is not an IP"):
        load_settings(IssuerSettings, trusted_proxies="10.0.0.1,proxy.internal", _env_file=None)
    with pytest.raises(SettingsError, match="KEYHERALD_HTTP_HEADER_TIMEOUT"):
        load_settings(IssuerSettings, http_header_timeout="1h", _env_file=None)


@pytest.mark.redis
@pytest.mark.parametrize(("issuer", "warned"), [
    ("http://issuer.internal:8080", True), ("https://issuer.test", False), ("http://127.0.0.1:8080", False),
])
async def test_plain_http_off_loopback_is_warned_about(issuer_settings: IssuerSettings, clock: ManualClock,
                                                       caplog: pytest.LogCaptureFixture,
                                                       issuer: str, warned: bool) -> None:
    settings = issuer_settings.model_copy(update={"issuer": issuer, "http_port": 0})
    caplog.set_level(logging.WARNING, logger="keyherald.issuer")
    async with running_issuer(settings, clock, serve_http=True) as runtime:
        assert runtime.http_port
    assert any("plain http" in r.getMessage() for r in caplog.records) == warned

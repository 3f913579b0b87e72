"""Issuer settings: ``KEYHERALD_*`` environment variables, overridable by flags."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator

from keyherald.shared.durations import Duration
from keyherald.shared.jwk import Algorithm, ControlAlgorithm
from keyherald.shared.settings import BaseKeyheraldSettings

__all__ = ["IssuerSettings", "default_state_dir", "is_loopback_url", "validate_issuer_url"]

_OFF = frozenset({"off", "none", "no", "false"})


def default_state_dir() -> Path:
    """Where a writer keeps its record of the log: $XDG_STATE_HOME/keyherald (~/.local/state)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "keyherald"


def _state_dir(value: Any) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        return default_state_dir()
    if isinstance(value, str) and value.strip().lower() in _OFF:
        return None
    return value


def validate_issuer_url(value: str) -> str:
    """RFC 8414 §2: the issuer is an absolute URL with no query or fragment. It is baked into
    every token and into the namespace's log, so a typo must stop here, not be published."""
    if any(c in value for c in "?#") or not value.isprintable() or " " in value:
        raise ValueError("must be an absolute http(s) URL with no query, fragment or spaces")
    try:
        parts = urlsplit(value)
        _ = parts.port  # ValueError for a port out of range or not a number
    except ValueError:
        raise ValueError("must be an absolute http(s) URL such as https://issuer.example.com") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL such as https://issuer.example.com (scheme and host)")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not hold credentials")
    return value


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` names this machine (plain http is fine there, and only there)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _auto_or_int(value: Any) -> Any:
    if value is None or (isinstance(value, str) and value.strip().lower() in {"", "auto"}):
        return None
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ValueError("must be a number of replicas, or auto") from None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 16:
        raise ValueError("must be 0-16 replicas, or auto")
    return value


class IssuerSettings(BaseKeyheraldSettings):
    kek: SecretStr | None = None
    """32-byte key-encryption key, base64url; encrypts every private key at rest."""
    kek_file: Path | None = None
    algorithm: Algorithm = "ES256"
    rsa_bits: int = Field(default=2048, ge=2048, le=8192)
    control_key_alg: ControlAlgorithm = "PS256"
    """The control key made when a namespace is first prepared (later, the stored one rules):
    PS256 (RSA-3072) verifies fastest in every agent; EdDSA (Ed25519) is smaller."""
    rotation_period: Duration = 86400.0
    token_ttl: Duration = 300.0
    """Default token lifetime and the maximum published to agents."""
    heartbeat_interval: Duration = 5.0
    lease_ttl: Duration = 5.0
    """The leader lease; a replica takes over within about this long after the leader dies."""
    min_replicas: Annotated[int | None, BeforeValidator(_auto_or_int)] = None
    """Replicas that must hold a revocation (of a token, a subject or a key, or an emergency
    rotation) before it is reported done (Redis WAIT). None (``auto``, the default): 1 through
    Sentinel, or when the primary reports a connected replica (or this process saw one); 0 on
    a lone server. Set it in production: a new process cannot tell a primary whose replicas
    all dropped out from a lone server."""
    replica_timeout: Duration = 2.0
    """How long a revocation waits for those replicas before it is reported not done."""
    stream_retain: int = Field(default=10_000, ge=100)
    """Events kept in the stream for agents catching up; older ones live only in the snapshot."""
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    workers: int | None = Field(default=None, ge=1, le=256)
    """Processes ``keyherald issuer run`` serves the port from (see :mod:`.workers`); None:
    one per core this process may run on."""
    trusted_proxies: str = ""
    """Comma-separated IPs or CIDRs of reverse proxies whose X-Forwarded-For is believed.
    Empty (the default): none, the TCP peer is the client (rate limits count it)."""
    http_header_timeout: Duration = 10.0
    """A connection that has not sent a whole request (headers and body) this long after it
    opened, or after its previous answer, is closed: half-open connections cost nothing."""
    http_keepalive_timeout: Duration = 5.0
    """An idle keep-alive connection is closed after this long."""
    auth_failures_per_client: int = Field(default=10, ge=1)
    """Failed authentications allowed per client_id per minute before 429."""
    auth_failures_per_address: int = Field(default=100, ge=1)
    """Failed authentications allowed per source address per minute before 429."""
    revocations_per_client: int = Field(default=60, ge=1)
    """RFC 7009 revocations one client may publish per minute: each is remembered by every
    agent until the token expires, so a client may not grow everyone's state without bound."""
    admin_scope: str = "keyherald:admin"
    console: bool = True
    """Serve the operator console at /console (``on``/``off``). On: it grants nothing the admin
    API does not (sign-in takes admin credentials, failures share the token endpoint's
    limits); see docs/console.md."""
    console_idle_timeout: Duration = 900.0
    """A console session unused this long ends (its record expires in Redis)."""
    max_clock_skew: Duration = 5.0
    """Refuse to run when this host's clock is further than this from the Redis server's.
    Within it, event times and token ``iat`` use the host clock corrected to the server's, so
    every replica's cut-offs and tokens agree."""
    control_key_file: Path | None = None
    """The control key, sealed under the KEK, in a file or a secret store mount as well as in
    Redis: a Redis that forgets its data then costs no trust anchor (see controlfile.py)."""
    auto_init: bool = False
    """Prepare an empty namespace (a new control key: a new trust anchor) when ``issuer run``
    finds one. Off: production replicas refuse, since an empty namespace there means Redis
    lost its data, or a wrong URL or namespace; ``issuer init`` and ``keyherald dev`` prepare."""
    state_dir: Annotated[Path | None, BeforeValidator(_state_dir)] = None
    """Where this writer keeps its record of the log (the furthest point it saw, the keys it
    saw revoked): it refuses a log in Redis older than that. ``off`` disables it (danger:
    a restarted replica then trusts whatever fresh-looking log Redis holds)."""

    @field_validator("token_ttl")
    @classmethod
    def _whole_seconds(cls, value: float) -> float:
        if value < 1:
            raise ValueError("must be at least 1s")
        return float(int(value))

    @field_validator("issuer")
    @classmethod
    def _issuer_url(cls, value: str) -> str:
        return validate_issuer_url(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: str) -> str:
        items = [item.strip() for item in value.split(",") if item.strip()]
        for item in items:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR (e.g. 10.0.0.0/8)") from None
        return ",".join(items)

    @field_validator("console_idle_timeout")
    @classmethod
    def _console_idle(cls, value: float) -> float:
        if not 60 <= value <= 8 * 3600:
            raise ValueError("must be between 1m and 8h")
        return value

    @field_validator("http_header_timeout", "http_keepalive_timeout")
    @classmethod
    def _http_timeout(cls, value: float) -> float:
        if not 1 <= value <= 300:
            raise ValueError("must be between 1s and 300s")
        return value

    @property
    def trusted_proxy_list(self) -> list[str]:
        return [item.strip() for item in self.trusted_proxies.split(",") if item.strip()]

    @model_validator(mode="after")
    def _coherent(self) -> IssuerSettings:
        if self.rotation_period < 1:
            raise ValueError("rotation_period must be at least 1s")
        if self.heartbeat_interval > 3600:
            raise ValueError("heartbeat_interval must be at most 1h")
        return self

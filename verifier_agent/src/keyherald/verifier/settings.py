"""The agent's settings: ``KEYHERALD_*`` variables, validated at construction, not at first use.

A bad value raises :class:`~keyherald.shared.errors.SettingsError` naming the variable
(``KEYHERALD_TRUST_ANCHOR: ...``), whether the settings come from the environment or from
keyword arguments, so a service fails at start with a line an operator can act on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationError, field_validator
from pydantic_settings import NoDecode

from keyherald.shared.durations import Duration, parse_duration
from keyherald.shared.envelope import TrustAnchor
from keyherald.shared.errors import SettingsError
from keyherald.shared.events import REVOCATION_GRACE
from keyherald.shared.presence import validate_agent_id
from keyherald.shared.redisurl import REPLICAS, parse_redis_url
from keyherald.shared.settings import BaseKeyheraldSettings, settings_error

__all__ = ["VerifierSettings"]

_OFF = frozenset({"", "none", "off", "never"})


def _audiences(value: Any) -> Any:
    """One audience, or several: ``orders``, ``orders,billing``, ``["orders", "billing"]``."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise ValueError("is not a JSON list of audiences") from None
        else:
            value = [part for part in text.replace(",", " ").split() if part]
    if isinstance(value, list | tuple | set | frozenset):
        items = list(value)
        if not items or not all(isinstance(a, str) and a and a.isprintable() for a in items):
            raise ValueError("needs one or more non-empty audiences")
        return tuple(items)
    raise ValueError("needs one or more audiences (a string, or a comma-separated list)")


def _duration_or_zero(value: Any) -> float:
    if isinstance(value, str) and value.strip().lower() in {"0", "0s", "0ms"}:
        return 0.0
    if isinstance(value, int | float) and not isinstance(value, bool) and value == 0:
        return 0.0
    return parse_duration(value)


def _staleness(value: Any) -> float | str | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in _OFF):
        return None
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    return parse_duration(value)


def _on_off(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip().lower()
        if text in {"on", "yes", "true", "1"}:
            return True
        if text in _OFF or text in {"no", "false", "0"}:
            return False
    return value


def _optional_path(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in _OFF:
        return None
    return value


class VerifierSettings(BaseKeyheraldSettings):
    """What an agent needs: where the log is, whose it is, and the key that signs it."""

    audience: Annotated[tuple[str, ...], NoDecode, BeforeValidator(_audiences)]
    """The ``aud`` values this service answers to; a token must name one of them."""
    trust_anchor: str
    """The issuer's control key: a public JWK as JSON, a path to one, or its RFC 7638 thumbprint."""
    leeway: Annotated[float, BeforeValidator(_duration_or_zero)] = 30.0
    """Clock skew tolerated on exp, nbf and iat; 0 allowed, at most the revocation grace."""
    max_staleness: Annotated[float | Literal["auto"] | None, BeforeValidator(_staleness)] = "auto"
    """Refuse every token (reason ``stale``) past this age without a verified event from the
    issuer. ``auto`` (the default): the issuer's maximum token lifetime plus the leeway (5m30s
    by default), after which every token the agent could accept was issued after it lost
    word. ``off``: never (danger: withheld revocations then go unnoticed but for status())."""
    cache_path: Annotated[Path | None, BeforeValidator(_optional_path)] = None
    """Keep the signed state here, to boot from it when Redis is down at start-up."""
    token_cache_size: int = Field(default=10_000, ge=0, le=10_000_000)
    """Verified tokens remembered (LRU); 0 disables the cache."""
    startup_timeout: Duration = 10.0
    """How long entering the agent may wait for Redis (when no cache file can serve)."""
    presence: Annotated[bool, BeforeValidator(_on_off)] = True
    """Report this agent in Redis (``{ns}:presence:<agent id>``) for ``keyherald fleet`` and
    ``--wait``; ``off`` keeps it out of both. The only thing an agent ever writes."""
    presence_interval: Duration = 10.0
    """How often the presence record is rewritten when nothing changes (on a change of seq,
    at most once a second); a record not rewritten within three intervals counts as lost."""
    agent_id: str | None = None
    """This agent's id in the fleet view; default: host name, pid and a random suffix."""
    redis_read_url: str | None = None
    """Follow the log here rather than on KEYHERALD_REDIS_URL's primary: a replica's URL (or
    several, ``redis://h1:p1,h2:p2``: the agent picks one by its id), a ``redis+sentinel://``
    URL (a replica of that service), or ``replicas`` (those of KEYHERALD_REDIS_URL's Sentinel
    service or cluster). The presence record is still written to the primary."""

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise settings_error(exc) from None

    @field_validator("trust_anchor")
    @classmethod
    def _anchor(cls, value: str) -> str:
        TrustAnchor.parse(value)  # raises ValueError with an operator's message
        return value.strip()

    @field_validator("leeway")
    @classmethod
    def _leeway(cls, value: float) -> float:
        if value > REVOCATION_GRACE:
            raise ValueError(f"must be at most {REVOCATION_GRACE}s (revocations outlive tokens by that)")
        return value

    @field_validator("max_staleness")
    @classmethod
    def _check_staleness(cls, value: float | str | None) -> float | str | None:
        if isinstance(value, float | int) and value < 1:
            raise ValueError("must be at least 1s, auto, or off")
        return value

    @field_validator("presence_interval")
    @classmethod
    def _interval(cls, value: float) -> float:
        if not 0.5 <= value <= 3600:
            raise ValueError("must be between 0.5s and 1h")
        return value

    @field_validator("redis_read_url")
    @classmethod
    def _read_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if value.strip().lower() != REPLICAS:
            try:
                parse_redis_url(value, setting="KEYHERALD_REDIS_READ_URL")
            except SettingsError as exc:
                raise ValueError(exc.problem) from None
        return value.strip()

    @field_validator("agent_id")
    @classmethod
    def _agent_id(cls, value: str | None) -> str | None:
        return None if value is None or not value.strip() else validate_agent_id(value.strip())

    def anchor(self) -> TrustAnchor:
        """A fresh TrustAnchor: each agent binds its own (a thumbprint binds on first snapshot)."""
        return TrustAnchor.parse(self.trust_anchor)

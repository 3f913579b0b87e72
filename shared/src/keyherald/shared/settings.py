"""The settings every keyherald process shares, read from ``KEYHERALD_*`` variables."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import SettingsError
from .names import Names, validate_namespace
from .redisurl import parse_redis_url

__all__ = ["BaseKeyheraldSettings", "load_settings", "settings_error"]

ENV_PREFIX = "KEYHERALD_"


class BaseKeyheraldSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_default=True)

    redis_url: str = "redis://127.0.0.1:6379/0"
    namespace: str = "keyherald"
    issuer: str = "http://127.0.0.1:8080"
    """The ``iss`` of every token; agents refuse a snapshot of another issuer."""

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        return validate_namespace(value)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        try:
            parse_redis_url(value)
        except SettingsError as exc:
            raise ValueError(exc.problem) from None
        return value.strip()

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        if not value or len(value) > 512 or not value.isprintable():
            raise ValueError("must be a non-empty printable string (usually the issuer's URL)")
        return value

    @property
    def names(self) -> Names:
        return Names(self.namespace)


S = TypeVar("S", bound=BaseSettings)


def settings_error(exc: ValidationError) -> SettingsError:
    """The first problem of a validation error, naming the KEYHERALD_* variable (never its value)."""
    first = exc.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else "settings"
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return SettingsError(f"{ENV_PREFIX}{field.upper()}", message)


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build settings, turning a validation error into a SettingsError naming the variable."""
    try:
        return cls(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise settings_error(exc) from None

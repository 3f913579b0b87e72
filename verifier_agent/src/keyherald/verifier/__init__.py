"""keyherald.verifier: the agent services embed to validate keyherald tokens offline.

    from keyherald.verifier import VerifierAgent, VerifierSettings, InvalidToken

    agent = VerifierAgent(VerifierSettings(audience="orders"))  # the rest from KEYHERALD_* env
    async with agent:
        claims = agent.verify(token)  # synchronous, CPU only; raises InvalidToken

Integrations live in ``keyherald.verifier.integrations.fastapi`` and ``.faststream``
(optional extras); ``keyherald.verifier.testing`` mints tokens an agent accepts, for tests.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from keyherald.shared.envelope import TrustAnchor
from keyherald.shared.logs import configure_logging

from .agent import VerifierAgent
from .errors import (
    AlgorithmNotAllowed,
    BootstrapError,
    InvalidSignature,
    InvalidToken,
    KeyNotActive,
    KeyRevoked,
    LifetimeExceeded,
    MalformedToken,
    StaleState,
    TokenExpired,
    TokenNotYetValid,
    TokenRevoked,
    UnknownKey,
    VerifierError,
    WrongAudience,
    WrongIssuer,
)
from .settings import VerifierSettings
from .status import AgentStatus, KeyStatus

if TYPE_CHECKING:
    from .client import TokenClient

_LAZY = {"TokenClient": "keyherald.verifier.client"}


def __getattr__(name: str) -> Any:
    """``TokenClient`` needs httpx (the ``[client]`` extra): imported only when asked for."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'keyherald.verifier' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "AgentStatus",
    "AlgorithmNotAllowed",
    "BootstrapError",
    "InvalidSignature",
    "InvalidToken",
    "KeyNotActive",
    "KeyRevoked",
    "KeyStatus",
    "LifetimeExceeded",
    "MalformedToken",
    "StaleState",
    "TokenClient",
    "TokenExpired",
    "TokenNotYetValid",
    "TokenRevoked",
    "TrustAnchor",
    "UnknownKey",
    "VerifierAgent",
    "VerifierError",
    "VerifierSettings",
    "WrongAudience",
    "WrongIssuer",
    "configure_logging",
]

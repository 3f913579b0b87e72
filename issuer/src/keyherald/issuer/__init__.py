"""keyherald.issuer: the issuer worker, its key store, rotation, token endpoint and admin API.

Operators and platform code act from Python with the same class the command uses:

    from keyherald.issuer import Admin, IssuerContext, IssuerSettings

    async with IssuerContext(IssuerSettings()) as ctx:      # KEYHERALD_* settings
        seq = await Admin(ctx).revoke_subject("orders")     # the seq of the signed event

Names load on first use (PEP 562): the ``keyherald`` command's admin actions need neither
the worker (FastStream) nor the HTTP server (FastAPI, uvicorn), and do not pay for them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .admin import Admin
    from .clients import Client, Credentials
    from .context import IssuerContext
    from .errors import (
        AppendContention,
        ClientExists,
        ClientNotFound,
        CorruptState,
        IssuerError,
        KeyNotFound,
        NamespaceOwnedElsewhere,
    )
    from .registry import ClientRegistry
    from .runtime import IssuerRuntime
    from .settings import IssuerSettings
    from .tokens import TokenSigner, sign_token
    from .worker import create_worker

__all__ = [
    "Admin",
    "AppendContention",
    "Client",
    "ClientExists",
    "ClientNotFound",
    "ClientRegistry",
    "CorruptState",
    "Credentials",
    "IssuerContext",
    "IssuerError",
    "IssuerRuntime",
    "IssuerSettings",
    "KeyNotFound",
    "NamespaceOwnedElsewhere",
    "TokenSigner",
    "create_worker",
    "sign_token",
]

_HOME = {
    "Admin": ".admin",
    "AppendContention": ".errors",
    "Client": ".clients",
    "ClientExists": ".errors",
    "ClientNotFound": ".errors",
    "ClientRegistry": ".registry",
    "CorruptState": ".errors",
    "Credentials": ".clients",
    "IssuerContext": ".context",
    "IssuerError": ".errors",
    "IssuerRuntime": ".runtime",
    "IssuerSettings": ".settings",
    "KeyNotFound": ".errors",
    "NamespaceOwnedElsewhere": ".errors",
    "TokenSigner": ".tokens",
    "create_worker": ".worker",
    "sign_token": ".tokens",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

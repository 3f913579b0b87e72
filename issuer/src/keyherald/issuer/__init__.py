"""keyherald.issuer: the issuer worker, its key store, rotation, token endpoint and admin API.

Operators and platform code act from Python with the same class the command uses:

    from keyherald.issuer import Admin, IssuerContext, IssuerSettings

    async with IssuerContext(IssuerSettings()) as ctx:      # KEYHERALD_* settings
        seq = await Admin(ctx).revoke_subject("orders")     # the seq of the signed event
"""

from __future__ import annotations

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

"""Optional framework integrations: ``.fastapi`` (extra ``fastapi``) and ``.faststream``
(extra ``faststream``). Each module imports its framework itself and says what to install
when it is missing; ``bearer`` holds the framework-free RFC 6750 decision they share."""

from __future__ import annotations

__all__: list[str] = []

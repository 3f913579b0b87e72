"""Two small services that show keyherald end to end: orders calls inventory with a token.

    examples.inventory  protects its routes with the verifier agent's FastAPI dependency
    examples.orders     gets tokens with a TokenClient and attaches them with httpx

Run them with compose.yaml, or by hand next to ``keyherald dev`` (docs/walkthrough.md).
"""

from __future__ import annotations

__all__: list[str] = []

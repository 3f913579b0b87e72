"""The agent for synchronous applications (Flask, Django): its own event loop on a thread.

``verify`` never touches the loop (it reads the key cache, swapped whole by the follower),
so request threads call it directly; only start and stop cross into the loop.

    agent = VerifierAgent(VerifierSettings(audience="orders"))
    agent.start_background()          # returns once bootstrapped, or raises BootstrapError
    claims = agent.verify(token)      # from any thread
    agent.stop_background()           # or: with agent: ...
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["BackgroundLoop"]

T = TypeVar("T")


class BackgroundLoop:
    """A daemon thread running an asyncio loop until stopped."""

    def __init__(self, name: str = "keyherald-verifier") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._started = threading.Event()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(self._started.set)
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def start(self) -> None:
        self._thread.start()
        self._started.wait()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result (its exception is raised here)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

"""An attacker who acts at the instant keyherald sends a command: Redis' MONITOR, read in a
thread, calls back on commands naming a key of interest. Used to swap a log under a running
command, the one race a patient attacker with write access can always arrange."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from keyherald.shared.connect import sync_client

__all__ = ["Monitor"]

Command = dict[str, Any]


class Monitor(threading.Thread):
    """Calls ``hook(command)`` for every command whose text contains one of ``needles``."""

    def __init__(self, redis_url: str, hooks: dict[str, Callable[[Command], None]]) -> None:
        super().__init__(daemon=True)
        self._url, self._hooks = redis_url, hooks
        self._stop = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        with sync_client(self._url) as client, client.monitor() as feed:
            self.ready.set()
            while not self._stop.is_set():
                command = feed.next_command()
                for needle, hook in self._hooks.items():
                    if needle in command["command"]:
                        hook(command)

    def __enter__(self) -> Monitor:
        self.start()
        self.ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()  # the thread ends at the next command it sees (heartbeats come every second)

"""What a decision hands the log to append: drafts of events, and client records beside them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from keyherald.shared.state import State

__all__ = ["Change", "Draft", "Mutation", "RetryAppend"]

Draft = tuple[str, dict[str, Any]]
"""An event to be: its type and data. The log gives it seq, time, issuer, log and prev."""


@dataclass(frozen=True)
class Change:
    """Events to append, and client records to write in the same script (None deletes)."""

    drafts: Sequence[Draft]
    clients: dict[str, str | None] = field(default_factory=dict)


Mutation = Callable[[State, float], Awaitable[Sequence[Draft] | Change]]
"""Decides, from the current verified state and the time, what to append. It must not
change the state it is given: the log applies the events once Redis took them."""


class RetryAppend(Exception):
    """Raised by a mutation that read something newer than the state it was given: the
    log catches up and asks it again."""

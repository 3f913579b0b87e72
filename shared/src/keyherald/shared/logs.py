"""Logging for keyherald processes: one event per line, as text or as JSON.

``KEYHERALD_LOG_FORMAT=json`` makes every line a JSON object (time, level, logger, message,
and the exception's type when there is one: never its traceback's locals, never a token or a
secret, which keyherald's messages never hold in the first place). Colour only on a terminal.

The issuer's commands call :func:`configure_logging`; a service that embeds the agent calls
it too if it wants keyherald's format (``keyherald.verifier.configure_logging``), or keeps
its own.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, TextIO

__all__ = ["JsonFormatter", "TextFormatter", "configure_logging", "log_format"]

_COLOURS = {"WARNING": "\033[33m", "ERROR": "\033[31m", "CRITICAL": "\033[31m"}
_RESET = "\033[0m"


def log_format() -> str:
    value = os.environ.get("KEYHERALD_LOG_FORMAT", "text").strip().lower()
    return "json" if value == "json" else "text"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and record.exc_info[0] is not None:
            doc["exception"] = record.exc_info[0].__name__
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``2026-11-30 04:17:50,526 WARNING keyherald.issuer: ...``, the level coloured on a terminal."""

    def __init__(self, *, colour: bool) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._colour = colour

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        colour = _COLOURS.get(record.levelname) if self._colour else None
        return line.replace(record.levelname, f"{colour}{record.levelname}{_RESET}", 1) if colour else line


def configure_logging(level: int = logging.INFO, *, fmt: str | None = None, stream: TextIO | None = None) -> None:
    """One handler on the root logger, in the format ``KEYHERALD_LOG_FORMAT`` names; every
    other handler removed (so libraries' own colourful handlers do not print twice)."""
    out = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(out)
    chosen = fmt or log_format()
    tty = bool(getattr(out, "isatty", lambda: False)())
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter(colour=tty))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.Formatter.converter = time.localtime

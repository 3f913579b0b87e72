"""Pages from templates shipped in the package, every value escaped, under the console's headers.

Jinja2 with autoescaping on for every template (whatever its name) and StrictUndefined: a
client name, an audience, a subject or an agent id is text wherever it lands, and a typo in a
template fails the test that renders it instead of printing nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from .access import SECURITY_HEADERS

__all__ = ["STATIC", "Renderer", "ago", "duration", "json_response", "redirect", "stamp", "when"]

STATIC = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8"}
"""The assets the console serves, from the installed package: no CDN, nothing else."""
NONE = "\u2013"
"""An en dash: a time that does not apply."""


def when(ts: float | None) -> str:
    if ts is None:
        return NONE
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def stamp(ts: float | None, now: float) -> str:
    """A time in a table: the time of day (UTC) when it is today, else the date too."""
    if ts is None:
        return NONE
    moment, today = datetime.fromtimestamp(ts, UTC), datetime.fromtimestamp(now, UTC)
    return moment.strftime("%H:%M:%SZ" if moment.date() == today.date() else "%b %d %H:%MZ")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return NONE
    s = int(abs(seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 172800:
        return f"{s // 3600}h {(s % 3600) // 60:02d}m"
    return f"{s // 86400}d {(s % 86400) // 3600}h"


def ago(ts: float | None, now: float) -> str:
    if ts is None:
        return NONE
    delta = ts - now
    return f"in {duration(delta)}" if delta > 0.5 else f"{duration(delta)} ago"


class Renderer:
    def __init__(self) -> None:
        self.env = Environment(
            loader=PackageLoader("keyherald.issuer.http.console", "templates"),
            autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        )
        self.env.filters.update(when=when, duration=duration)
        self.env.globals.update(ago=ago, stamp=stamp)
        base = resources.files("keyherald.issuer.http.console") / "static"
        self.static = {name: (base / name).read_bytes() for name in STATIC}

    def page(self, name: str, status: int = 200, **values: Any) -> Response:
        html = self.env.get_template(name).render(**values)
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    def asset(self, name: str) -> Response:
        body = self.static.get(name)
        if body is None:
            return Response("not found", status_code=404, headers=SECURITY_HEADERS, media_type="text/plain")
        headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
        return Response(body, headers=headers, media_type=STATIC[name])


def redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)


def json_response(body: Any, status: int = 200) -> Response:
    return JSONResponse(body, status_code=status, headers=SECURITY_HEADERS)

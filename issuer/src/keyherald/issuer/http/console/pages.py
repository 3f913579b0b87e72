"""The console's pages (GET) and the JSON their script polls.

A page that follows an action shows what was done from a fixed list (``?done=<code>``): a
link cannot make the console say anything else. ``?seq=&log=`` adds the progress of that
event through the fleet, filled by the script from ``/console/api/confirm``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from ...fleet import Confirmation, wait_for_fleet
from ..admin import fleet_target
from . import views
from .access import whole_number
from .render import json_response

if TYPE_CHECKING:
    from . import Console, Route
    from .sessions import Session

__all__ = ["DONE", "routes", "watched"]

DONE = {
    "rotated": "Rotated: the standby key signs from now on.",
    "emergency": "Emergency rotation done: the old key is revoked and the standby signs from now on.",
    "token": "Token revoked.",
    "subject": "Subject revoked: every token issued to it so far is refused.",
    "key": "Key revoked.",
    "disabled": "Client disabled: it gets no new tokens (revoke its subject to cut off the ones it holds).",
    "enabled": "Client enabled.",
}
CONFIRM_WAIT = 2.0
"""How long one poll of /console/api/confirm waits for a change before answering."""


def watched(request: Request) -> dict[str, Any] | None:
    """The action just done and the event to follow through the fleet, from the query."""
    q = request.query_params
    code = q.get("done", "")
    if code not in DONE:
        return None
    seq = q.get("seq", "")
    return {"text": DONE[code], "seq": whole_number(seq), "log": q.get("log", "")[:64]}


async def common(console: Console, session: Session, page: str) -> dict[str, Any]:
    return {"session": session, "nav": page, "health": await views.health(console.service),
            "now": console.service.clock()}


async def overview(console: Console, request: Request, session: Session) -> Response:
    service = console.service
    fleet = views.fleet_doc(await views.fleet(service), service.settings.heartbeat_interval)
    return console.render.page(
        "overview.html", title="Overview", **await common(console, session, "overview"),
        keys=await views.keys(service), fleet=fleet, done=watched(request),
    )


async def revoke_page(console: Console, request: Request, session: Session) -> Response:
    service = console.service
    clients = await service.runtime.ctx.clients().list()
    keys = await views.keys(service)
    return console.render.page(
        "revoke.html", title="Revoke", **await common(console, session, "revoke"),
        clients=clients, keys=keys, done=watched(request), error=None,
    )


async def clients_page(console: Console, request: Request, session: Session) -> Response:
    clients = await console.service.runtime.ctx.clients().list()
    return console.render.page(
        "clients.html", title="Clients", **await common(console, session, "clients"),
        clients=clients, done=watched(request), error=None, form={},
    )


async def events_page(console: Console, request: Request, session: Session) -> Response:
    kind = request.query_params.get("type", "")
    kind = kind if kind in views.EVENT_TYPES else ""
    return console.render.page(
        "events.html", title="Events", **await common(console, session, "events"),
        events=await views.events(console.service, kind or None), kind=kind, types=views.EVENT_TYPES,
    )


async def live(console: Console, request: Request, session: Session) -> Response:
    service = console.service
    fleet = views.fleet_doc(await views.fleet(service), service.settings.heartbeat_interval)
    return json_response({"health": await views.health(service), "fleet": fleet})


async def confirm(console: Console, request: Request, session: Session) -> Response:
    """How far event ``seq`` got through the fleet; waits up to CONFIRM_WAIT for a change from
    what the page saw (``seen`` agents holding it), so the bar moves as agents confirm. The
    agents awaited are those live when the event was appended: one frozen since is named as
    missing (while its record lasts), not dropped as lost."""
    service = console.service
    q = request.query_params
    seq, seen = q.get("seq", ""), q.get("seen", "")
    state = await service.state()
    number = whole_number(seq)
    target = await fleet_target(service, state, number, q.get("log") or None) if number is not None else None
    if target is None:
        return json_response({"error": "seq must name an event of the log"}, 400)
    known = whole_number(seen)
    known = -1 if known is None else known

    def changed(result: Confirmation) -> bool:
        return len(result.confirmed) != known

    since = max(0.0, service.clock() - target.time)
    result = await wait_for_fleet(service.redis, service.names, state.position, target, timeout=CONFIRM_WAIT,
                                  until=changed, silent_since=since)
    total = len(result.confirmed) + len(result.missing)
    body: dict[str, Any] = {
        "seq": target.seq, "log": target.log, "live": total, "confirmed": len(result.confirmed),
        "complete": result.complete, "since_ms": round(max(0.0, service.clock() - target.time) * 1000),
        "missing": [{"agent_id": a.agent_id, "seq": a.record.seq, "age": round(a.age, 1), "live": a.live,
                     "stale": a.record.stale} for a in result.missing],
    }
    if result.complete and result.confirmed:
        # When the last agent wrote the record that holds it (its age, from the key's TTL: no
        # agent clock), from the event's issuer time.
        reached = service.clock() - min(a.age for a in result.confirmed)
        body["elapsed_ms"] = round(max(0.0, reached - target.time) * 1000)
    return json_response(body)


async def static(console: Console, request: Request) -> Response:
    return console.render.asset(str(request.path_params.get("name", "")))


def routes(console: Console) -> list[Route]:
    return [
        ("/console", console.signed_in(overview), ["GET"]),
        ("/console/revoke", console.signed_in(revoke_page), ["GET"]),
        ("/console/clients", console.signed_in(clients_page), ["GET"]),
        ("/console/events", console.signed_in(events_page), ["GET"]),
        ("/console/api/live", console.signed_in(live, api=True), ["GET"]),
        ("/console/api/confirm", console.signed_in(confirm, api=True), ["GET"]),
        ("/console/static/{name}", console.open(static), ["GET"]),
    ]

"""The issuer worker: a FastStream app around one :class:`IssuerRuntime`.

FastStream owns the process lifecycle (signals, start-up and shut-down hooks) and follows
the event stream for this replica: every new entry, once its signature verifies, makes
the token signer pick up the active key at once, wherever the leader runs.
"""

from __future__ import annotations

import logging
from typing import Any

from faststream import FastStream
from faststream.redis import RedisBroker, StreamSub

from keyherald.shared.clock import Clock, system_clock
from keyherald.shared.errors import ProtocolError
from keyherald.shared.names import EVENT_FIELD

from .runtime import IssuerRuntime
from .settings import IssuerSettings

__all__ = ["create_worker"]

log = logging.getLogger("keyherald.issuer")


def create_worker(
    settings: IssuerSettings, *, clock: Clock = system_clock, serve_http: bool = True, duties: bool = True,
    worker: int | None = None, reuse_port: bool = False,
) -> tuple[FastStream, IssuerRuntime]:
    """The app of one replica; ``duties``, ``worker`` and ``reuse_port``: see IssuerRuntime."""
    runtime = IssuerRuntime(settings, clock=clock, serve_http=serve_http, duties=duties, worker=worker,
                            reuse_port=reuse_port)
    broker = RedisBroker(settings.redis_url, log_level=logging.DEBUG)

    @broker.subscriber(stream=StreamSub(settings.names.events, last_id="$", polling_interval=50))
    async def on_log_entry(body: dict[str, Any]) -> None:
        raw = body.get(EVENT_FIELD)
        try:
            event = runtime.ctx.control.anchor.open_event(str(raw), issuer=settings.issuer)
        except ProtocolError as exc:
            log.warning("refused a stream entry that is not ours (%s)", exc.code)
            return
        runtime.seq = max(runtime.seq, event.seq)
        await runtime.on_event()

    async def started() -> None:
        await runtime.start()
        log.info("issuer %s: replica %s started", settings.issuer, runtime.replica_id)

    # The runtime starts before the broker, so the first replica creates the control key
    # and the genesis keys before anything is consumed; it stops after the broker.
    app = FastStream(broker, on_startup=[started], after_shutdown=[runtime.stop])
    return app, runtime

"""POST /token decided in one pass, without a coroutine, when its one read is all it needs.

Nearly every token request is the same case: a known client, its right secret, no limit
reached, a log that has not moved since the client's record was checked, a key at hand.
For that case the endpoint's coroutine (:func:`.token.answer_token`) cost a task, a frame
per step and a wake-up after its read. Here the request is taken as far as its read
(form, credentials, counter names) where it arrived, its read (the log's head, the
counters, the client's record) is queued with a callback, and the replies finish it
there: the limiter's verdict, the client as the log binds it,
the constant-time secret check, the audience and scope policy, the claims, the signature,
all with the very functions the coroutine uses.

Whenever any step would need more than that read (an unknown or changed record to fetch,
the log to follow, a failure to count, a limit reached, a disabled client, no key yet,
Redis trouble, anything unexpected), the request goes to the coroutine from its start,
which reads again and decides: every answer but a token or a policy refusal comes from the
one place that gives it.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ..clients import secret_matches
from .oauth import NO_STORE, Answer, ClientAuth, Form, OAuthError, credentials, error_answer, parse_form
from .token import GRANT_TYPE, LATENCY, REFUSED, Presented, answer_token

if TYPE_CHECKING:
    from . import Service

__all__ = ["Done", "ExpressLane", "Spawn"]

log = logging.getLogger("keyherald.issuer")

Done = Callable[[Answer], None]
"""Writes the answer (the connection's)."""
Spawn = Callable[[Coroutine[Any, Any, None]], None]
"""Runs a coroutine as the connection's task (so that shutdown waits for it)."""


class ExpressLane:
    """``lane(presented, done, spawn)``: answer a token request, by callback or by coroutine."""

    def __init__(self, service: Service) -> None:
        self._service = service
        self._reads: dict[tuple[str, str, str], tuple[bytes, bytes]] = {}

    def __call__(self, presented: Presented, done: Done, spawn: Spawn) -> None:
        service = self._service
        try:
            form = parse_form(presented.content_type, presented.body)
        except OAuthError:
            self._slow(presented, done, spawn)  # its answer and its count are the coroutine's
            return
        try:
            auth = credentials(presented.authorization, form) if form.get("grant_type") == GRANT_TYPE else None
        except OAuthError:
            auth = None  # its answer (and the failure it counts) is the coroutine's to give
        if auth is not None:
            client_key, address_key = service.limiter.keys(auth.client_id, presented.address)
            if client_key is not None and address_key is not None:
                reply = functools.partial(self._looked_up, presented, form, auth, done, spawn)
                if service.lookup.send_now(reply, *self._reads_for(auth.client_id, client_key, address_key)):
                    return
        self._slow(presented, done, spawn)

    def _reads_for(self, client_id: str, client_key: str, address_key: str) -> tuple[bytes, bytes]:
        """The MGET (the head, both counters) and the HGET (the record), packed, kept by their
        keys: the same for a client's requests from one address in one window."""
        found = self._reads.get((client_id, client_key, address_key))
        if found is None:
            if len(self._reads) >= 4096:
                self._reads.clear()
            service = self._service
            found = self._reads[(client_id, client_key, address_key)] = (
                service.lookup.packed("MGET", service.names.head, client_key, address_key),
                service.lookup.packed("HGET", service.names.clients, client_id),
            )
        return found

    def _looked_up(self, presented: Presented, form: Form, auth: ClientAuth, done: Done, spawn: Spawn,
                   reply: Any) -> None:
        """Called with the read's replies, by the connection to Redis."""
        try:
            answer = self._decide(form, auth, reply)
        except Exception:
            log.exception("unexpected error in the token endpoint's express lane (the request is served anyway)")
            answer = None
        if answer is None:
            self._slow(presented, done, spawn)
        else:
            LATENCY.observe(time.perf_counter() - presented.started)
            done(answer)

    def _decide(self, form: Form, auth: ClientAuth, reply: Any) -> Answer | None:
        """The answer, or None when it takes more than this read to give it."""
        counted, raw = reply
        if isinstance(counted, Exception) or isinstance(raw, Exception):
            return None
        service = self._service
        head, client_count, address_count = counted
        if service.limiter.verdict(client_count, address_count).limited:
            return None
        client = service.clients.known(auth.client_id, head, raw)
        if not secret_matches(client, auth.secret) or client is None or client.disabled:
            return None  # unknown and wrong alike: one hash and compare each, then the coroutine
        try:
            template = service.template_for(client, form)
        except OAuthError as exc:
            REFUSED.labels(exc.error, client.client_id).inc()
            return error_answer(exc)
        token = service.runtime.signer.sign_now(template.payload(service.clock()))
        if token is None:
            return None
        template.issued.inc()
        return Answer(200, (template.answer % token).encode(), NO_STORE)

    def _slow(self, presented: Presented, done: Done, spawn: Spawn) -> None:
        spawn(self._answer(presented, done))

    async def _answer(self, presented: Presented, done: Done) -> None:
        done(await answer_token(self._service, presented))

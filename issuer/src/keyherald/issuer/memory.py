"""What a writer remembers beyond the log Redis holds: its record on disk, the logs it left,
and the state of a log it left, whose revocations it appends again to the one it adopted.

Kept apart from :mod:`.eventlog` (which appends and repairs) because it is the writer's
side of the "Redis is untrusted" promise: whatever Redis comes to hold, a writer never
forgets a key it saw revoked, and never lets a revocation it saw vanish from the log.
"""

from __future__ import annotations

import logging
import time

from keyherald.shared.clock import Clock
from keyherald.shared.events import REVOCATION_GRACE, EventType, KeyState
from keyherald.shared.revocations import RevokedTokens
from keyherald.shared.state import State

from .drafts import Draft
from .highwater import HighWater, RecordFile

__all__ = ["MAX_REASSERT", "Draft", "WriterMemory"]

log = logging.getLogger("keyherald.issuer")

MAX_REASSERT = 512
"""Revocations appended again per commit (a log that lost many gets them over a few ticks)."""
MAX_LEFT = 64


class WriterMemory:
    def __init__(self, record_file: RecordFile | None, clock: Clock) -> None:
        self._file = record_file
        self._clock = clock
        self._record: HighWater | None = None
        self._loaded = False
        self._durable_at = float("-inf")
        self.left: list[str] = []
        self.lost: State | None = None
        """After leaving a log for another: the state we held, whose revocations the new log may lack."""

    @property
    def record(self) -> HighWater | None:
        """This host's record of the log (None without one, or with the record turned off)."""
        if not self._loaded:
            self._loaded = True
            self._record = self._file.read() if self._file is not None else None
            if self._record is not None:
                self.left = list(self._record.left)
        return self._record

    def rekey(self, record_file: RecordFile, state: State | None) -> None:
        """The anchor was rotated: the record goes on under the new key's file name."""
        record = self.record
        self._file = record_file
        if record is not None or state is not None:
            self.write(state, durable=True)

    def leave(self, log_id: str) -> None:
        if log_id and log_id not in self.left:
            self.left = [*self.left, log_id][-MAX_LEFT:]

    def revoked_kids(self, state: State | None) -> dict[str, int]:
        """Every kid this writer knows revoked (from the log, its record, a log it left): it
        never signs with one again, and the leader revokes it again in a log that forgot."""
        record = self.record
        kids = dict(record.revoked_kids) if record else {}
        for known in (self.lost, state):
            if known is None:
                continue
            for key in known.keys.values():
                if key.state is KeyState.REVOKED:
                    kids[key.kid] = max(kids.get(key.kid, 0), key.expires_at or int(known.time) + 86_400)
        return kids

    def lost_drafts(self, state: State | None) -> list[Draft]:
        """Revocations of tokens and subjects, and later client changes, that the log we left
        held and ``state`` lacks (keys are revoked again by the leader's plan, from
        :meth:`revoked_kids`)."""
        lost = self.lost
        if lost is None or state is None:
            return []
        horizon = state.time - REVOCATION_GRACE
        drafts: list[Draft] = []
        lost_tokens = lost.revoked_tokens
        assert isinstance(lost_tokens, RevokedTokens)  # the issuer's own store
        for jti, expires_at in sorted(lost_tokens.items()):
            if expires_at >= horizon and state.revoked_tokens.get(jti, 0) < expires_at:
                drafts.append((str(EventType.TOKEN_REVOKED), {"jti": jti, "expires_at": expires_at}))
        for sub, cut in sorted(lost.revoked_subjects.items()):
            known = state.revoked_subjects.get(sub)
            if cut.expires_at >= horizon and (known is None or known.revoked_at < cut.revoked_at):
                drafts.append((str(EventType.SUBJECT_REVOKED), {
                    "sub": sub, "revoked_at": cut.revoked_at, "expires_at": cut.expires_at}))
        for client_id, mark in sorted(lost.clients.items()):
            held = state.clients.get(client_id)
            if held is None or held.at < mark.at:
                # Binds the record we last saw: if Redis holds an older one, no record matches
                # and the client fails closed instead of coming back as it was.
                drafts.append((str(EventType.CLIENT_UPDATED), {"client_id": client_id, "record": mark.record or None}))
        return drafts

    def progress(self, state: State, *, force: bool = False) -> None:
        """Write the record after every move (a small file, renamed into place); flushed to the
        disk at once for a new log or a newly revoked kid, else at most once a second."""
        if self._file is None:
            return
        known = self.record.revoked_kids if self.record else {}
        durable = force or time.monotonic() - self._durable_at >= 1.0 or \
            not self.revoked_kids(state).keys() <= known.keys()
        self.write(state, durable=durable)

    def write(self, state: State | None, *, durable: bool = True) -> None:
        if self._file is None or state is None:
            return
        record = HighWater(log=state.log, seq=state.seq, head=state.head, time=state.time,
                           revoked_kids=self.revoked_kids(state), left=tuple(self.left))
        try:
            self._record = self._file.merge(record, now=self._clock(), durable=durable)
        except OSError as exc:
            log.error("cannot write the local record %s (%s)", self._file.path, exc.strerror)
            return
        self._loaded = True
        if durable:
            self._durable_at = time.monotonic()

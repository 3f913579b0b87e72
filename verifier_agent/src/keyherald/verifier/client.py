"""The calling side: get tokens from the issuer, keep them fresh, attach them to requests.

    async with TokenClient("http://issuer:8080/token", "orders", secret, audience="inventory") as tokens:
        async with httpx.AsyncClient(auth=tokens) as http:
            await http.get("http://inventory/items/42")   # Authorization: Bearer ... added

- One token per client, cached and refreshed ahead of expiry, at 80 % of its lifetime (as
  the kubelet does for projected service account tokens): a slow issuer never makes a
  caller wait on a token about to expire. If that early refresh fails, the current token
  still serves until it truly expires.
- Concurrent callers share one fetch (a single in-flight future), so a burst of requests
  at start-up or at refresh time costs the issuer one POST.
- Transient failures (connection errors, 5xx, 429 honouring Retry-After) are retried with
  capped, jittered exponential backoff. 4xx answers are not: ``invalid_client`` means the
  secret is wrong or rotated, and retrying would only trip the issuer's rate limit.
- As an ``httpx.Auth``: a 401 ``invalid_token`` from the server (the token was revoked,
  or its key) triggers one refresh and one retry of the request, not a loop.

Needs the ``client`` extra: ``pip install keyherald-verifier[client]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Sequence
from types import TracebackType
from typing import Any, Self

from keyherald.shared.clock import Clock, system_clock
from keyherald.shared.errors import KeyheraldError

try:
    import httpx
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "keyherald.verifier.client needs httpx: pip install keyherald-verifier[client]"
    ) from exc

__all__ = ["InvalidClient", "TokenClient", "TokenRequestError"]

log = logging.getLogger("keyherald.verifier.client")

MAX_RETRY_AFTER = 60.0
EXPIRY_MARGIN = 5.0
"""A token this close to its exp is not handed out while a fresh one is being fetched."""
MIN_REJECTED_AGE = 1.0
"""A token fetched because of a 401 and refused again within this long is not replaced at
once: at most one such POST a second, however many calls a refusing service gets."""
"""A Retry-After longer than this is not waited out in full: we try again after it."""
_RETRYABLE = frozenset({429, 500, 502, 503, 504})


class TokenRequestError(KeyheraldError):
    """The issuer did not give a token. ``error`` is its OAuth error code (or ``unreachable``)."""

    code = "token_request_failed"

    def __init__(self, message: str, *, error: str = "unknown", status: int | None = None) -> None:
        super().__init__(message)
        self.error = error
        self.status = status


class InvalidClient(TokenRequestError):
    """Wrong client_id or secret (or a rotated secret): retrying will not help."""

    code = "invalid_client"


class TokenClient(httpx.Auth):
    """Fetches, caches and refreshes one access token; also an ``httpx.Auth`` that attaches it."""

    refresh_ratio = 0.8

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        audience: str | Sequence[str],
        scope: str | Sequence[str] | None = None,
        clock: Clock = system_clock,
        http: httpx.AsyncClient | None = None,
        max_attempts: int = 5,
        backoff: float = 0.2,
        backoff_cap: float = 5.0,
        timeout: float = 10.0,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.token_url = token_url
        self.client_id = client_id
        self._secret = client_secret
        self._audiences = [audience] if isinstance(audience, str) else list(audience)
        self._scope = scope if scope is None or isinstance(scope, str) else " ".join(scope)
        self._clock = clock
        self._own_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(timeout=timeout)
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._backoff_cap = backoff_cap
        self._sleep = sleep
        self._token: str | None = None
        self._refresh_at = 0.0
        self._expires_at = 0.0
        self._fetched_at = 0.0
        self._after_rejection = False
        self._inflight: asyncio.Future[str] | None = None
        self.fetches = 0
        """POSTs that returned a token (for metrics and tests)."""

    # -- tokens --------------------------------------------------------------------------

    async def token(self) -> str:
        """A valid token. Past 80 % of its life a refresh starts in the background while the
        current token keeps serving; a caller waits only when there is no usable token."""
        now = self._clock()
        if self._token is not None and now < self._refresh_at:
            return self._token
        if self._token is not None and now < self._expires_at - EXPIRY_MARGIN:
            self._refresh_in_background()
            return self._token
        try:
            return await self._shared_fetch()
        except TokenRequestError as exc:
            if self._token is not None and self._clock() < self._expires_at - 1 and not isinstance(exc, InvalidClient):
                log.warning("token refresh failed (%s); the current token serves until it expires", exc.error)
                return self._token
            raise

    def _refresh_in_background(self) -> None:
        if self._inflight is None:
            task = self._inflight = asyncio.ensure_future(self._fetch())
            task.add_done_callback(self._fetched)

    async def refresh(self, *, rejected: str | None = None) -> str:
        """Fetch a new token now. With ``rejected`` (a service answered 401 to it), only if it
        is still the cached one (many requests refused at once cause one refresh), and not if it
        was itself fetched because of a 401 less than MIN_REJECTED_AGE ago: a service that
        refuses every token must not cost a POST per call."""
        if rejected is not None and self._token is not None:
            if self._token != rejected:
                return self._token
            if self._after_rejection and self._clock() - self._fetched_at < MIN_REJECTED_AGE:
                return self._token
        self._refresh_at = 0.0
        token = await self._shared_fetch()
        self._after_rejection = rejected is not None
        return token

    async def _shared_fetch(self) -> str:
        # The fetch runs as a task of its own: a caller cancelled while waiting does not
        # cancel it for the others.
        task = self._inflight
        if task is None:
            task = self._inflight = asyncio.ensure_future(self._fetch())
            task.add_done_callback(self._fetched)
        return await asyncio.shield(task)

    def _fetched(self, task: asyncio.Future[str]) -> None:
        if self._inflight is task:
            self._inflight = None
        if not task.cancelled():
            task.exception()  # mark retrieved: callers that gave up must not cause a warning

    async def _fetch(self) -> str:
        last: TokenRequestError | None = None
        for attempt in range(self._max_attempts):
            wait: float | None = None
            try:
                response = await self._http.post(self.token_url, data=self._form(), auth=self._basic())
            except httpx.TransportError as exc:
                last = TokenRequestError(f"cannot reach the issuer ({type(exc).__name__})", error="unreachable")
            else:
                if response.status_code == 200:
                    return self._accept(response)
                last = self._error(response)
                if response.status_code not in _RETRYABLE:
                    raise last
                if response.status_code in (429, 503):  # both may say when to come back
                    wait = _retry_after(response.headers.get("retry-after"), self._clock())
            if attempt + 1 < self._max_attempts:
                delay = min(wait, MAX_RETRY_AFTER) if wait is not None else self._delay(attempt)
                log.info("token request failed (%s); retry %d in %.2fs", last.error, attempt + 1, delay)
                await self._sleep(delay)
        assert last is not None
        raise last

    def _delay(self, attempt: int) -> float:
        base: float = min(self._backoff_cap, self._backoff * 2.0**attempt)
        return base / 2 + random.uniform(0, base / 2)  # noqa: S311 - jitter, not a secret

    def _form(self) -> dict[str, Any]:
        form: dict[str, Any] = {"grant_type": "client_credentials", "audience": self._audiences}
        if self._scope is not None:
            form["scope"] = self._scope
        return form

    def _basic(self) -> httpx.BasicAuth:
        # RFC 6749 §2.3.1: form-urlencode each half before Basic encoding.
        from urllib.parse import quote_plus

        return httpx.BasicAuth(quote_plus(self.client_id), quote_plus(self._secret))

    def _accept(self, response: httpx.Response) -> str:
        try:
            body = response.json()
            token, kind, lifetime = body["access_token"], body["token_type"], body["expires_in"]
        except (ValueError, KeyError, TypeError):
            raise TokenRequestError("the issuer's answer is not a token response", error="bad_response") from None
        if not isinstance(token, str) or str(kind).lower() != "bearer" or not isinstance(lifetime, int | float):
            raise TokenRequestError("the issuer's answer is not a bearer token response", error="bad_response")
        now = self._clock()
        self._token = token
        self._fetched_at = now
        self._after_rejection = False
        self._expires_at = now + float(lifetime)
        self._refresh_at = now + self.refresh_ratio * float(lifetime)
        self.fetches += 1
        return token

    @staticmethod
    def _error(response: httpx.Response) -> TokenRequestError:
        try:
            body = response.json()
            error = str(body.get("error", "unknown"))
            description = str(body.get("error_description", ""))[:200]
        except (ValueError, AttributeError):
            error, description = "unknown", ""
        message = f"the issuer refused a token: {response.status_code} {error}"
        message += f" ({description})" if description else ""
        kind = InvalidClient if error == "invalid_client" else TokenRequestError
        return kind(message, error=error, status=response.status_code)

    # -- httpx.Auth --------------------------------------------------------------------------

    def auth(self) -> httpx.Auth:
        """This client as an ``httpx.Auth`` (it is one): ``httpx.AsyncClient(auth=client.auth())``."""
        return self

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self.token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        challenge = response.headers.get("www-authenticate", "")
        if response.status_code == 401 and "invalid_token" in challenge:
            fresh = await self.refresh(rejected=token)
            request.headers["Authorization"] = f"Bearer {fresh}"
            yield request

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("TokenClient is asynchronous: use it with httpx.AsyncClient")

    # -- lifecycle ---------------------------------------------------------------------------

    async def aclose(self) -> None:
        if self._own_http:
            with contextlib.suppress(Exception):
                await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"TokenClient(client_id={self.client_id!r}, token_url={self.token_url!r})"


def _retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)

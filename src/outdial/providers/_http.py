"""Shared httpx plumbing for the provider adapters.

Every adapter is two halves:

* a sans-IO half, :class:`HttpApi`, subclassed once per provider: it builds
  :class:`Outgoing` requests from domain values and reads ``httpx.Response``
  objects back into domain values (``PlacedCall``, ``CallEvent``, errors);
* a transport half, :class:`SyncHttpProvider` or :class:`AsyncHttpProvider`,
  which only sends what the first half built, with ``httpx.Client`` or
  ``httpx.AsyncClient``.

A provider's public classes combine the two (``class VapiProvider(SyncHttpProvider,
_VapiApi[httpx.BaseTransport])``), so request building, response parsing and
error classification are written once and only the transport call differs.

Errors are classified here, once, for every provider:

============================================  ======================  ==========
what happened                                 error                   ``placed``
============================================  ======================  ==========
connect error / connect or pool timeout        ProviderUnavailable     False
read or write timeout, connection dropped      ProviderUnavailable     None
HTTP 429 (``Retry-After`` -> ``retry_after``)  ProviderRateLimited     False
HTTP 401 / 403                                 ProviderAuthError       False
other HTTP 4xx                                 ProviderRejected        False
HTTP 5xx                                       ProviderUnavailable     None
2xx without a call id                          ProviderUnavailable     None
============================================  ======================  ==========

A provider may override the class for its own error codes (Twilio 21211 is
``ProviderRejected``, 20429 ``ProviderRateLimited``...). ``placed`` only has a
meaning for ``place_call``; cancel and fetch errors carry ``placed=None``.
"""

from __future__ import annotations

import asyncio
import email.utils
import enum
import functools
import json
import math
import os
import re
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import Any, Generic, TypeVar
from urllib.parse import urlencode

import attrs
import httpx

from outdial import __version__
from outdial.errors import (
    ConfigurationError,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)
from outdial.phone import mask_phone
from outdial.ports import CallEvent, DialRequest, PlacedCall

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_TIMEOUT",
    "AsyncHttpProvider",
    "HttpApi",
    "Operation",
    "Outgoing",
    "SyncHttpProvider",
    "TokenBucket",
    "api_key_from_env",
    "cannot_tell",
    "parse_retry_after",
    "redact",
    "unsupported",
]

#: 10 s to read a response, 5 s to connect: explicit, never httpx's "no timeout".
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
#: Keep up to 100 connections alive (httpx keeps 20), so a dialer placing 50 calls
#: at once does not pay a TLS handshake per call.
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=100)

_UTC = timezone.utc
_USER_AGENT = f"outdial/{__version__} httpx/{httpx.__version__}"
_JSON = "application/json"
_FORM = "application/x-www-form-urlencoded"

TransportT = TypeVar("TransportT", bound="httpx.BaseTransport | httpx.AsyncBaseTransport")
_S = TypeVar("_S", bound="SyncHttpProvider")
_A = TypeVar("_A", bound="AsyncHttpProvider")


# -- outgoing requests -------------------------------------------------------------------


@attrs.frozen
class Outgoing:
    """One HTTP request an adapter wants sent (method, path or absolute URL, body)."""

    method: str
    path: str
    content: bytes | None = None
    content_type: str | None = None

    @classmethod
    def json(cls, method: str, path: str, payload: Mapping[str, Any]) -> Outgoing:
        """A JSON request (compact UTF-8 encoding)."""
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        return cls(method, path, body, _JSON)

    @classmethod
    def form(cls, method: str, path: str, fields: Sequence[tuple[str, str]]) -> Outgoing:
        """A form-encoded request; a name may repeat (``StatusCallbackEvent``)."""
        return cls(method, path, urlencode(list(fields)).encode(), _FORM)

    @property
    def headers(self) -> dict[str, str] | None:
        return {"Content-Type": self.content_type} if self.content_type else None


class Operation(str, enum.Enum):
    """What a request is for: it decides what ``placed`` an error carries."""

    PLACE = "place_call"
    CANCEL = "cancel_call"
    FETCH = "fetch_call"


# -- calls-per-second limit ----------------------------------------------------------------


class TokenBucket:
    """A calls-per-second limit for one provider account, shared by threads,
    sync and async adapters alike.

    ``rate`` calls per second on average, up to ``burst`` at once. It is a
    generic cell rate algorithm: :meth:`reserve` takes the next free slot under
    a lock and says how long to wait for it; :meth:`acquire` sleeps that long,
    :meth:`acquire_async` awaits it. ``clock``, ``sleep`` and ``async_sleep``
    are injectable so tests run on a virtual clock.
    """

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
            raise ConfigurationError("rate", rate, "must be a positive number of calls per second")
        if not isinstance(burst, int) or burst < 1:
            raise ConfigurationError("burst", burst, "must be a whole number >= 1")
        self.rate = float(rate)
        self.burst = burst
        self._interval = 1.0 / self.rate
        self._tolerance = (burst - 1) * self._interval
        self._clock = clock
        self._sleep = sleep
        self._async_sleep = async_sleep
        self._next: float | None = None  # theoretical arrival time of the next call
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate!r}, burst={self.burst!r})"

    def reserve(self) -> float:
        """Take the next slot; return the seconds to wait before using it (>= 0)."""
        with self._lock:
            now = self._clock()
            due = now if self._next is None else max(self._next, now)
            self._next = due + self._interval
            return max(0.0, due - self._tolerance - now)

    def acquire(self) -> None:
        """Block until a call may be placed."""
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)

    async def acquire_async(self) -> None:
        """Wait (without blocking the loop) until a call may be placed."""
        wait = self.reserve()
        if wait > 0:
            await self._async_sleep(wait)


@functools.cache
def _tls() -> ssl.SSLContext:
    """One verifying TLS context for every adapter: loading the CA bundle costs
    ~50 ms, so adapters share it instead of each client building its own."""
    return httpx.create_ssl_context()


def _bucket(rate_limit: TokenBucket | float | None) -> TokenBucket | None:
    if rate_limit is None or isinstance(rate_limit, TokenBucket):
        return rate_limit
    return TokenBucket(rate_limit)


# -- error helpers -----------------------------------------------------------------------

_PHONE_LIKE = re.compile(r"\+?\d[\d\- ]{5,}\d")


def redact(text: str) -> str:
    """``text`` with anything that looks like a phone number masked (``+1******4567``)."""

    def _mask(match: re.Match[str]) -> str:
        raw = match.group(0)
        digits = re.sub(r"\D", "", raw)
        if len(digits) < 7:
            return raw
        return mask_phone(("+" if raw.startswith("+") else "") + digits)

    return _PHONE_LIKE.sub(_mask, text)


def parse_retry_after(
    value: str | None, date: str | None = None, now: datetime | None = None
) -> timedelta | None:
    """A ``Retry-After`` header as a delay: delta-seconds or an HTTP date.

    An HTTP date is measured from the response's own ``Date`` header when given
    (no local clock needed), else from ``now``, else from the system clock. A
    date in the past gives zero; anything unreadable gives ``None``.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds) or seconds < 0:
            return None
        try:
            return timedelta(seconds=seconds)
        except OverflowError:
            return None
    at = _http_date(text)
    if at is None:
        return None
    reference = _http_date(date) if date else None
    if reference is None:
        reference = now if now is not None else datetime.now(_UTC)
    return max(timedelta(0), at - reference)


def _http_date(text: str) -> datetime | None:
    try:
        at = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=_UTC)


def api_key_from_env(
    prefix: str, environ: Mapping[str, str] | None = None
) -> tuple[str, str | None]:
    """``{prefix}API_KEY`` and ``{prefix}BASE_URL`` from ``environ`` (``os.environ`` when
    None): what ``from_env`` of a provider that authenticates with one API key reads.
    The base URL is None when unset or empty; a missing or empty key raises
    :class:`~outdial.errors.ConfigurationError` naming the variable."""
    env = os.environ if environ is None else environ
    key = env.get(f"{prefix}API_KEY")
    if not key:
        raise ConfigurationError(f"{prefix}API_KEY", None, "is not set")
    return key, env.get(f"{prefix}BASE_URL") or None


def cannot_tell(provider: str, reason: str) -> ProviderUnavailable:
    """The error ``fetch_call`` raises when the provider cannot say (``placed=None``)."""
    return ProviderUnavailable(
        f"cannot tell: {reason}", provider=provider, code="cannot_tell", placed=None
    )


def unsupported(provider: str, what: str) -> ProviderRejected:
    """The error raised for an operation a provider's API does not offer."""
    return ProviderRejected(
        f"{what} is not offered by the {provider} API",
        provider=provider,
        code="unsupported",
        placed=None,
    )


# Raised before a single byte of the request left: the call certainly was not placed.
_NOT_SENT: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ProxyError,
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
    httpx.InvalidURL,
)


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        data = json.loads(response.content) if response.content else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


# -- the sans-IO half ---------------------------------------------------------------------


class HttpApi(Generic[TransportT]):
    """What every adapter shares: settings, error classification and the
    provider hooks the transport halves call.

    Subclasses (one per provider) implement the ``_build_*`` / ``_read_*`` hooks
    and may refine ``_error_info``, ``_error_class`` and ``_is_not_found``.
    """

    name: str = "http"

    _client: Any

    def __init__(
        self,
        *,
        base_url: str,
        headers: Mapping[str, str],
        transport: TransportT | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        rate_limit: TokenBucket | float | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._bucket = _bucket(rate_limit)
        self._timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self._open({"User-Agent": _USER_AGENT, **headers}, transport)

    def _open(self, headers: dict[str, str], transport: TransportT | None) -> None:
        raise NotImplementedError  # provided by SyncHttpProvider / AsyncHttpProvider

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    # -- provider hooks ---------------------------------------------------------------

    def _build_place(self, request: DialRequest) -> Outgoing:
        raise NotImplementedError

    def _read_placed(self, data: Mapping[str, Any], request: DialRequest) -> PlacedCall | None:
        """The placed call, or None when the answer has no call id."""
        raise NotImplementedError

    def _build_cancel(self, external_call_id: str) -> Outgoing:
        raise unsupported(self.name, "cancelling a call")

    def _next_cancel(
        self, previous: Outgoing, data: Mapping[str, Any], external_call_id: str
    ) -> Outgoing | None:
        """A follow-up request after the cancel step ``previous`` answered ``data``
        (None: done)."""
        return None

    def _build_fetch(self, attempt_id: str, external_call_id: str | None) -> Outgoing:
        if external_call_id is None:
            raise cannot_tell(
                self.name, f"{self.name} cannot look a call up by attempt id, only by call id"
            )
        return self._build_fetch_by_id(external_call_id)

    def _build_fetch_by_id(self, external_call_id: str) -> Outgoing:
        raise NotImplementedError

    def _read_fetched(self, data: Mapping[str, Any], attempt_id: str) -> CallEvent | None:
        raise NotImplementedError

    def _error_info(
        self, status: int, data: Mapping[str, Any] | None, text: str
    ) -> tuple[str | int | None, str]:
        """(provider error code, message) of an error response."""
        if data:
            code = data.get("code")
            code = code if isinstance(code, (str, int)) and not isinstance(code, bool) else None
            for key in ("message", "error_message", "detail", "error", "msg", "Message"):
                value = data.get(key)
                if isinstance(value, str) and value:
                    return code, value
                if isinstance(value, dict):
                    inner_code, inner = self._error_info(status, value, json.dumps(value))
                    return (code if code is not None else inner_code), inner
                if isinstance(value, list) and value:
                    return code, json.dumps(value)[:500]
        return None, text[:500] or f"HTTP {status}"

    def _error_class(
        self, status: int, code: str | int | None, message: str
    ) -> type[ProviderError] | None:
        """A provider-specific class for an error response (None: by HTTP status)."""
        return None

    def _is_not_found(self, status: int, code: str | int | None, message: str) -> bool:
        """Whether a fetch answer means "no such call" (not a wrong URL)."""
        return status == 404

    # -- shared reading -----------------------------------------------------------------

    def _checked(self, response: httpx.Response, op: Operation) -> dict[str, Any] | None:
        """The JSON object of a successful answer; raise a classified error otherwise.

        Returns None for a fetch the provider answered "no such call".
        """
        status = response.status_code
        data = _json_object(response)
        if 200 <= status < 300:
            return data if data is not None else {}
        code, message = self._error_info(status, data, response.text)
        message = redact(message)
        if op is Operation.FETCH and status == 404 and self._is_not_found(status, code, message):
            return None
        cls = self._error_class(status, code, message) or _class_for_status(status)
        placed: bool | None = None
        if op is Operation.PLACE and 400 <= status < 500:
            placed = False
        raise cls(
            message,
            provider=self.name,
            code=code,
            status_code=status,
            retry_after=parse_retry_after(
                response.headers.get("retry-after"), response.headers.get("date")
            ),
            placed=placed,
            details=redact(response.text[:1000]),
        )

    def _transport_failure(self, exc: Exception, op: Operation) -> ProviderError:
        not_sent = isinstance(exc, _NOT_SENT)
        placed: bool | None = False if (not_sent and op is Operation.PLACE) else None
        what = "could not connect" if not_sent else "no answer (the request may have arrived)"
        return ProviderUnavailable(
            f"{what}: {type(exc).__name__}: {redact(str(exc))}",
            provider=self.name,
            code=type(exc).__name__,
            placed=placed,
        )

    def _placed_from(self, data: Mapping[str, Any], request: DialRequest) -> PlacedCall:
        placed = self._read_placed(data, request)
        if placed is None:
            raise ProviderUnavailable(
                "the provider accepted the request but sent no call id",
                provider=self.name,
                placed=None,
                details=redact(json.dumps(data)[:1000]),
            )
        return placed

    def _required_status(self, value: str | None) -> str:
        """A fetched call's status; an answer without one cannot tell anything."""
        if value is None:
            raise cannot_tell(self.name, "the provider's answer has no call status")
        return value

    def _fetched_from(self, data: dict[str, Any] | None, attempt_id: str) -> CallEvent | None:
        return None if data is None else self._read_fetched(data, attempt_id)


def _class_for_status(status: int) -> type[ProviderError]:
    if status == 429:
        return ProviderRateLimited
    if status in (401, 403):
        return ProviderAuthError
    if status == 408:
        return ProviderUnavailable
    if 400 <= status < 500:
        return ProviderRejected
    return ProviderUnavailable


# -- the transport halves ------------------------------------------------------------------


class SyncHttpProvider(HttpApi[httpx.BaseTransport]):
    """Sends an adapter's requests with ``httpx.Client`` (a :class:`CallProvider`)."""

    _client: httpx.Client

    def _open(self, headers: dict[str, str], transport: httpx.BaseTransport | None) -> None:
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            transport=transport,
            timeout=self._timeout,
            limits=DEFAULT_LIMITS,
            verify=_tls(),
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _send(self, out: Outgoing, op: Operation) -> dict[str, Any] | None:
        try:
            response = self._client.request(
                out.method, out.path, content=out.content, headers=out.headers
            )
        except (httpx.TransportError, httpx.InvalidURL) as exc:
            raise self._transport_failure(exc, op) from exc
        return self._checked(response, op)

    def place_call(self, request: DialRequest) -> PlacedCall:
        """Ask the provider to call ``request.to``; see :class:`~outdial.ports.CallProvider`."""
        out = self._build_place(request)
        if self._bucket is not None:
            self._bucket.acquire()
        return self._placed_from(self._send(out, Operation.PLACE) or {}, request)

    def cancel_call(self, external_call_id: str) -> None:
        """Cancel or hang up a call."""
        out: Outgoing | None = self._build_cancel(external_call_id)
        while out is not None:
            data = self._send(out, Operation.CANCEL)
            out = self._next_cancel(out, data or {}, external_call_id)

    def fetch_call(self, *, attempt_id: str, external_call_id: str | None) -> CallEvent | None:
        """The provider's current view of a call (None: it has no such call)."""
        out = self._build_fetch(attempt_id, external_call_id)
        return self._fetched_from(self._send(out, Operation.FETCH), attempt_id)


class AsyncHttpProvider(HttpApi[httpx.AsyncBaseTransport]):
    """Sends an adapter's requests with ``httpx.AsyncClient`` (an :class:`AsyncCallProvider`)."""

    _client: httpx.AsyncClient

    def _open(self, headers: dict[str, str], transport: httpx.AsyncBaseTransport | None) -> None:
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            transport=transport,
            timeout=self._timeout,
            limits=DEFAULT_LIMITS,
            verify=_tls(),
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def __aenter__(self: _A) -> _A:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _send(self, out: Outgoing, op: Operation) -> dict[str, Any] | None:
        try:
            response = await self._client.request(
                out.method, out.path, content=out.content, headers=out.headers
            )
        except (httpx.TransportError, httpx.InvalidURL) as exc:
            raise self._transport_failure(exc, op) from exc
        return self._checked(response, op)

    async def place_call(self, request: DialRequest) -> PlacedCall:
        """Ask the provider to call ``request.to``; see :class:`~outdial.ports.CallProvider`."""
        out = self._build_place(request)
        if self._bucket is not None:
            await self._bucket.acquire_async()
        return self._placed_from(await self._send(out, Operation.PLACE) or {}, request)

    async def cancel_call(self, external_call_id: str) -> None:
        """Cancel or hang up a call."""
        out: Outgoing | None = self._build_cancel(external_call_id)
        while out is not None:
            data = await self._send(out, Operation.CANCEL)
            out = self._next_cancel(out, data or {}, external_call_id)

    async def fetch_call(
        self, *, attempt_id: str, external_call_id: str | None
    ) -> CallEvent | None:
        """The provider's current view of a call (None: it has no such call)."""
        out = self._build_fetch(attempt_id, external_call_id)
        return self._fetched_from(await self._send(out, Operation.FETCH), attempt_id)

"""Exotel: connect-to-flow adapter, token-checked status callback, status table.

``ExotelProvider`` / ``AsyncExotelProvider`` place calls with
``POST /v1/Accounts/{sid}/Calls/connect.json`` (HTTP Basic with the API key and
token, form-encoded): Exotel dials ``From`` (the recipient) and runs the call
flow at ``Url`` (``agent.options["url"]``, else built from the account sid and
``agent.external_agent_id`` as the flow's app id), showing ``CallerId`` (the
agent's ExoPhone). ``CustomField`` carries the attempt id (at most 128
characters) and the ``StatusCallback`` URL carries it too, with the secret
token :class:`ExotelWebhook` checks (Exotel documents no signature).

Indian numbers may be written nationally (``09876543210``, ``9876543210``):
they are sent as ``+919876543210``.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote
from zoneinfo import ZoneInfo

import attrs
import httpx

from outdial._time import require_aware
from outdial.campaign import AgentSettings
from outdial.errors import (
    ConfigurationError,
    InvalidPhoneNumber,
    Problem,
    ProviderRejected,
    WebhookPayloadError,
    WebhookVerificationError,
)
from outdial.outcomes import CallOutcome
from outdial.phone import normalize_phone
from outdial.ports import CallEvent, CallStatus, DialRequest, PlacedCall, WebhookRequest
from outdial.providers import _mapping as m
from outdial.providers._http import (
    DEFAULT_TIMEOUT,
    AsyncHttpProvider,
    HttpApi,
    Outgoing,
    SyncHttpProvider,
    TokenBucket,
    TransportT,
)
from outdial.providers._signing import same
from outdial.providers._wire import add_query, body_fields, number, path, query_params, text

__all__ = [
    "EXOTEL_API",
    "AsyncExotelProvider",
    "ExotelProvider",
    "ExotelWebhook",
    "exotel_outcome",
]

EXOTEL_API = "https://api.exotel.com"
NAME = "exotel"
CUSTOM_FIELD_LIMIT = 128

_STATUS = {
    "queued": m.QUEUED,
    "ringing": m.RINGING,
    "in-progress": m.IN_PROGRESS,
    "completed": m.ANSWERED,
    "busy": m.BUSY,
    "no-answer": m.NO_ANSWER,
    "failed": m.ERROR_RETRY,
}


def exotel_outcome(status: str) -> m.Mapped:
    """What an Exotel call ``Status`` means.

    ==================================  ==========  ================
    Status                              outcome     retryable
    ==================================  ==========  ================
    queued, ringing, in-progress        (not final)
    completed                           answered    no
    busy                                busy        yes
    no-answer                           no_answer   yes
    failed                              error       yes
    anything else                       error       yes (logged once)
    ==================================  ==========  ================
    """
    value = status.strip().lower()
    return _STATUS.get(value) or m.unknown_value(NAME, "Status", value)


def _indian(number_text: str, field: str) -> str:
    try:
        return normalize_phone(number_text, "IN")
    except InvalidPhoneNumber as exc:
        raise ProviderRejected(
            f"{field}: {exc.reason}", provider=NAME, code="invalid_number", placed=False
        ) from None


# -- webhook ---------------------------------------------------------------------------------


@attrs.frozen
class ExotelWebhook:
    """Verifies and parses Exotel status callbacks (JSON, form or multipart).

    ``token`` is the secret the adapter put in the callback URL's ``param``
    query parameter; it is compared in constant time. ``DateUpdated``
    (``YYYY-MM-DD HH:mm:ss``, no zone) is read in ``timezone``.
    """

    token: str = attrs.field(repr=False)
    param: str = "token"
    timezone: str = "Asia/Kolkata"
    provider: str = attrs.field(default=NAME, init=False)

    def verify(self, request: WebhookRequest, *, now: datetime | None = None) -> None:
        """Raise :class:`WebhookVerificationError` unless the URL carries the token."""
        given = query_params(request.url).get(self.param)
        if not given:
            raise WebhookVerificationError(NAME, f"callback URL has no {self.param} parameter")
        if not same(self.token, given):
            raise WebhookVerificationError(NAME, f"wrong {self.param} in the callback URL")

    def parse(self, request: WebhookRequest, *, now: datetime) -> CallEvent:
        """Verify ``request`` and turn the status callback into a :class:`CallEvent`."""
        require_aware(now, "now")
        self.verify(request, now=now)
        fields = body_fields(NAME, request)
        call_sid = text(fields.get("CallSid"))
        status = text(fields.get("Status"))
        if call_sid is None or status is None:
            raise WebhookPayloadError(NAME, "status callback without CallSid or Status")
        event_type = (text(fields.get("EventType")) or "terminal").lower()
        mapped = m.IN_PROGRESS if event_type == "answered" else exotel_outcome(status)
        duration = number(NAME, "ConversationDuration", fields.get("ConversationDuration"))
        return mapped.event(
            NAME,
            raw_status=status,
            external_call_id=call_sid,
            attempt_id=query_params(request.url).get("attempt_id")
            or text(fields.get("CustomField")),
            occurred_at=self._local(text(fields.get("DateUpdated"))) or now,
            duration_seconds=duration,
            error=status if mapped.outcome is CallOutcome.ERROR else None,
            event_id=f"{call_sid}:{event_type}:{status}",
            raw=fields,
        )

    def _local(self, value: str | None) -> datetime | None:
        if value is None:
            return None
        try:
            naive = datetime.strptime(value, "%Y-%m-%d %H:%M:%S")  # noqa: DTZ007
        except ValueError:
            raise WebhookPayloadError(
                NAME, f"DateUpdated is not YYYY-MM-DD HH:mm:ss: {value!r}"
            ) from None
        return naive.replace(tzinfo=ZoneInfo(self.timezone))


# -- REST adapter -------------------------------------------------------------------------------

_T = TypeVar("_T", bound="_ExotelApi[Any]")


def agent_problems(agent: AgentSettings) -> list[Problem]:
    """What an Exotel agent lacks: the ExoPhone and the call flow (app id or URL)."""
    problems: list[Problem] = []
    if not agent.phone_number:
        problems.append(Problem("agent.phone_number", "exotel needs the ExoPhone (CallerId)"))
    if not agent.external_agent_id and not agent.options.get("url"):
        problems.append(
            Problem(
                "agent.external_agent_id",
                "exotel needs the call flow's app id (or options.url)",
            )
        )
    return problems


class _ExotelApi(HttpApi[TransportT]):
    name = NAME

    def __init__(
        self,
        account_sid: str,
        api_key: str,
        api_token: str,
        *,
        status_callback_url: str | None = None,
        callback_token: str | None = None,
        subdomain: str = "api.exotel.com",
        base_url: str | None = None,
        transport: TransportT | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        rate_limit: TokenBucket | float | None = None,
    ) -> None:
        for field, value in (
            ("account_sid", account_sid),
            ("api_key", api_key),
            ("api_token", api_token),
        ):
            if not value:
                raise ConfigurationError(field, value, "is required")
        if status_callback_url and not callback_token:
            raise ConfigurationError(
                "callback_token",
                None,
                "is required with status_callback_url (Exotel has no "
                "signature: the token authenticates the callbacks)",
            )
        self.account_sid = account_sid
        self.status_callback_url = status_callback_url
        self._callback_token = callback_token
        self._path = f"/v1/Accounts/{quote(account_sid, safe='')}/Calls"
        basic = base64.b64encode(f"{api_key}:{api_token}".encode()).decode()
        super().__init__(
            base_url=base_url or f"https://{subdomain}",
            headers={"Authorization": f"Basic {basic}", "Accept": "application/json"},
            transport=transport,
            timeout=timeout,
            rate_limit=rate_limit,
        )

    check_agent = staticmethod(agent_problems)

    @classmethod
    def from_env(
        cls: type[_T], prefix: str = "EXOTEL_", environ: Mapping[str, str] | None = None, **kw: Any
    ) -> _T:
        """Build from ``{prefix}ACCOUNT_SID``, ``{prefix}API_KEY`` (or ``AUTH_KEY``),
        ``{prefix}API_TOKEN`` (or ``AUTH_TOKEN``), ``{prefix}SUBDOMAIN``,
        ``{prefix}STATUS_CALLBACK_URL``, ``{prefix}CALLBACK_TOKEN`` and
        ``{prefix}BASE_URL``."""
        env = os.environ if environ is None else environ
        values = {
            "ACCOUNT_SID": env.get(f"{prefix}ACCOUNT_SID"),
            "API_KEY": env.get(f"{prefix}API_KEY") or env.get(f"{prefix}AUTH_KEY"),
            "API_TOKEN": env.get(f"{prefix}API_TOKEN") or env.get(f"{prefix}AUTH_TOKEN"),
        }
        for suffix, value in values.items():
            if not value:
                raise ConfigurationError(f"{prefix}{suffix}", None, "is not set")
        return cls(
            values["ACCOUNT_SID"] or "",
            values["API_KEY"] or "",
            values["API_TOKEN"] or "",
            status_callback_url=env.get(f"{prefix}STATUS_CALLBACK_URL") or None,
            callback_token=env.get(f"{prefix}CALLBACK_TOKEN") or None,
            subdomain=env.get(f"{prefix}SUBDOMAIN") or "api.exotel.com",
            base_url=env.get(f"{prefix}BASE_URL") or None,
            **kw,
        )

    def webhook(self) -> ExotelWebhook:
        """The verifier for this adapter's status callbacks (its callback token)."""
        if not self._callback_token:
            raise ConfigurationError("callback_token", None, "is needed to verify callbacks")
        return ExotelWebhook(self._callback_token)

    def _build_place(self, request: DialRequest) -> Outgoing:
        agent = request.agent
        caller = request.caller_id or agent.phone_number
        flow = agent.options.get("url") or (
            f"http://my.exotel.com/{self.account_sid}/exoml/start_voice/{agent.external_agent_id}"
            if agent.external_agent_id
            else None
        )
        if not caller or not flow:
            raise ProviderRejected(
                "exotel needs agent.phone_number and a call flow (external_agent_id or "
                "options.url)",
                provider=NAME,
                code="configuration",
            )
        if len(request.attempt_id) > CUSTOM_FIELD_LIMIT:
            raise ProviderRejected(
                f"attempt id longer than Exotel's {CUSTOM_FIELD_LIMIT}-character CustomField",
                provider=NAME,
                code="custom_field_too_long",
            )
        fields = [
            ("From", _indian(request.to, "To")),
            ("CallerId", _indian(caller, "CallerId")),
            ("Url", flow),
            ("CallType", "trans"),
            ("CustomField", request.attempt_id),
        ]
        if self.status_callback_url and self._callback_token:
            callback = add_query(
                self.status_callback_url,
                [("attempt_id", request.attempt_id), ("token", self._callback_token)],
            )
            fields += [
                ("StatusCallback", callback),
                ("StatusCallbackEvents[0]", "terminal"),
                ("StatusCallbackEvents[1]", "answered"),
            ]
        for option, field in (("time_limit", "TimeLimit"), ("timeout", "TimeOut")):
            if agent.options.get(option):
                fields.append((field, agent.options[option]))
        return Outgoing.form("POST", f"{self._path}/connect.json", fields)

    def _read_placed(self, data: Mapping[str, Any], request: DialRequest) -> PlacedCall | None:
        call = data.get("Call")
        sid = text(path(call, "Sid"))
        if sid is None:
            return None
        mapped = _STATUS.get(str(path(call, "Status") or "").lower())
        status = mapped.status if mapped is not None and not mapped.final else CallStatus.QUEUED
        return PlacedCall(NAME, sid, status, raw=data)

    def _build_fetch_by_id(self, external_call_id: str) -> Outgoing:
        return Outgoing("GET", f"{self._path}/{quote(external_call_id, safe='')}.json")

    def _read_fetched(self, data: Mapping[str, Any], attempt_id: str) -> CallEvent:
        call = data.get("Call") if isinstance(data.get("Call"), dict) else {}
        status = self._required_status(text(path(call, "Status")))
        mapped = exotel_outcome(status)
        return mapped.event(
            NAME,
            raw_status=status,
            external_call_id=text(path(call, "Sid")),
            attempt_id=attempt_id,
            duration_seconds=number(NAME, "Duration", path(call, "Duration")),
            raw=data,
        )

    def _error_info(
        self, status: int, data: Mapping[str, Any] | None, text_: str
    ) -> tuple[str | int | None, str]:
        exception = (data or {}).get("RestException")
        if isinstance(exception, dict):
            code = exception.get("Code")
            message = exception.get("Message")
            return (
                code if isinstance(code, (str, int)) else None,
                message if isinstance(message, str) and message else f"HTTP {status}",
            )
        return super()._error_info(status, data, text_)


class ExotelProvider(SyncHttpProvider, _ExotelApi[httpx.BaseTransport]):
    """Exotel, synchronous (:class:`~outdial.ports.CallProvider`):
    ``ExotelProvider(account_sid, api_key, api_token, status_callback_url=...,
    callback_token=...)``. Exotel offers no API to cancel a call."""


class AsyncExotelProvider(AsyncHttpProvider, _ExotelApi[httpx.AsyncBaseTransport]):
    """Exotel, asyncio (:class:`~outdial.ports.AsyncCallProvider`); same arguments."""

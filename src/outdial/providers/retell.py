"""Retell AI: REST adapter, signed webhook, disconnection-reason table.

``RetellProvider`` / ``AsyncRetellProvider`` place calls with
``POST /v2/create-phone-call`` (Bearer API key, JSON): ``from_number`` is the
caller id, ``override_agent_id`` the agent's ``external_agent_id`` (optional:
without it the number's own agent answers), the personalisation variables go
to ``retell_llm_dynamic_variables`` and ``metadata`` carries the attempt id.

:class:`RetellWebhook` checks ``x-retell-signature: v=<ms>,d=<hex>``, where
``d`` is HMAC-SHA256(api key, raw body + timestamp), within 5 minutes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote

import attrs
import httpx

from outdial._time import require_aware
from outdial.campaign import AgentSettings
from outdial.errors import (
    ConfigurationError,
    Problem,
    ProviderRejected,
    WebhookPayloadError,
    WebhookVerificationError,
)
from outdial.outcomes import CallOutcome
from outdial.ports import CallEvent, DialRequest, PlacedCall, WebhookRequest
from outdial.providers import _mapping as m
from outdial.providers._http import (
    DEFAULT_TIMEOUT,
    AsyncHttpProvider,
    HttpApi,
    Outgoing,
    SyncHttpProvider,
    TokenBucket,
    TransportT,
    api_key_from_env,
)
from outdial.providers._signing import (
    check_fresh,
    epoch_instant,
    hex_matches,
    hmac_digest,
    signature_params,
)
from outdial.providers._wire import json_object, number, path, text

__all__ = [
    "RETELL_API",
    "AsyncRetellProvider",
    "RetellProvider",
    "RetellWebhook",
    "retell_outcome",
]

RETELL_API = "https://api.retellai.com"
NAME = "retell"

_STATUS = {"registered": m.QUEUED, "ongoing": m.IN_PROGRESS}
_REASONS = {
    "user_hangup": m.ANSWERED,
    "agent_hangup": m.ANSWERED,
    "call_transfer": m.ANSWERED,
    "inactivity": m.ANSWERED,
    "max_duration_reached": m.ANSWERED,
    "voicemail_reached": m.VOICEMAIL,
    "dial_no_answer": m.NO_ANSWER,
    "dial_busy": m.BUSY,
    "invalid_destination": m.INVALID_NUMBER,
    "user_declined": m.DECLINED,
    "dial_failed": m.ERROR_RETRY,
    "concurrency_limit_reached": m.ERROR_RETRY,
    "marked_as_spam": m.ERROR_FINAL,
    "no_valid_payment": m.ERROR_FINAL,
    "telephony_provider_permission_denied": m.ERROR_FINAL,
}


def retell_outcome(disconnection_reason: str, *, in_voicemail: bool = False) -> m.Mapped:
    """What a Retell ``disconnection_reason`` means.

    ==============================================================  ==============  =========
    disconnection_reason                                            outcome         retryable
    ==============================================================  ==============  =========
    user_hangup, agent_hangup, call_transfer, inactivity,           answered        no
    max_duration_reached
    voicemail_reached (or ``call_analysis.in_voicemail``)           voicemail       yes
    dial_no_answer                                                  no_answer       yes
    dial_busy                                                       busy            yes
    invalid_destination                                             invalid_number  no
    user_declined                                                   declined        no
    dial_failed, error_*, concurrency_limit_reached                 error           yes
    marked_as_spam, no_valid_payment,                               error           no
    telephony_provider_permission_denied
    anything else (logged once)                                     error           yes
    ==============================================================  ==============  =========
    """
    reason = disconnection_reason.strip().lower()
    mapped = _REASONS.get(reason)
    if mapped is None:
        mapped = m.ERROR_RETRY if reason.startswith("error_") else None
    if mapped is None:
        mapped = m.unknown_value(NAME, "disconnection_reason", reason)
    if in_voicemail and mapped.outcome is CallOutcome.ANSWERED:
        return m.VOICEMAIL
    return mapped


def _call_outcome(call: Mapping[str, Any]) -> tuple[m.Mapped, str]:
    status = (text(call.get("call_status")) or "").lower()
    progress = _STATUS.get(status)
    if progress is not None:
        return progress, status
    reason = text(call.get("disconnection_reason"))
    if reason is None:
        if status in ("ended", "not_connected", "error"):
            return m.ERROR_RETRY, status
        return m.unknown_value(NAME, "call_status", status), status
    voicemail = path(call, "call_analysis", "in_voicemail") is True
    return retell_outcome(reason, in_voicemail=voicemail), reason


def _duration(call: Mapping[str, Any]) -> float | None:
    ms = number(NAME, "duration_ms", call.get("duration_ms"))
    if ms is not None:
        return ms / 1000.0
    start = number(NAME, "start_timestamp", call.get("start_timestamp"))
    end = number(NAME, "end_timestamp", call.get("end_timestamp"))
    if start is not None and end is not None:
        return max(0.0, (end - start) / 1000.0)
    return None


def _event(call: Mapping[str, Any], attempt_id: str | None, **kw: Any) -> CallEvent:
    mapped, raw_status = _call_outcome(call)
    return mapped.event(
        NAME,
        raw_status=raw_status,
        external_call_id=text(call.get("call_id")),
        attempt_id=text(path(call, "metadata", "attempt_id")) or attempt_id,
        duration_seconds=_duration(call),
        error=raw_status if mapped.outcome is CallOutcome.ERROR else None,
        raw=call,
        **kw,
    )


# -- webhook ----------------------------------------------------------------------------------


@attrs.frozen
class RetellWebhook:
    """Verifies and parses Retell webhooks (``call_started``, ``call_ended``,
    ``call_analyzed``; other events come back non-final, without outcome).

    ``api_key`` is the Retell API key that signs webhooks; ``tolerance`` bounds
    how far the signed timestamp may be from ``now``.
    """

    api_key: str = attrs.field(repr=False)
    tolerance: timedelta = timedelta(minutes=5)
    provider: str = attrs.field(default=NAME, init=False)

    def verify(self, request: WebhookRequest, *, now: datetime) -> None:
        """Raise :class:`WebhookVerificationError` unless Retell signed ``request``
        within the tolerance."""
        require_aware(now, "now")
        header = request.header("x-retell-signature")
        if not header:
            raise WebhookVerificationError(NAME, "missing x-retell-signature header")
        params = signature_params(NAME, header)
        stamps, digests = params.get("v", []), params.get("d", [])
        if len(stamps) != 1 or not stamps[0].isdigit() or not digests:
            raise WebhookVerificationError(NAME, "x-retell-signature is not v=<ms>,d=<hex>")
        check_fresh(NAME, epoch_instant(NAME, stamps[0], unit="ms"), now, self.tolerance)
        digest = hmac_digest(self.api_key, request.body + stamps[0].encode())
        if not any(hex_matches(digest, d) for d in digests):
            raise WebhookVerificationError(NAME, "x-retell-signature does not match the body")

    def parse(self, request: WebhookRequest, *, now: datetime) -> CallEvent:
        """Verify ``request`` and turn the webhook into a :class:`CallEvent`."""
        self.verify(request, now=now)
        data = json_object(NAME, request.body)
        kind = text(data.get("event"))
        call = data.get("call")
        if kind is None or not isinstance(call, dict):
            raise WebhookPayloadError(NAME, "body needs an event and a call object")
        call_id = text(call.get("call_id"))
        event_id = f"{call_id}:{kind}" if call_id else None
        if kind in ("call_ended", "call_analyzed"):
            stamp = call.get("end_timestamp")
            at = epoch_instant(NAME, str(stamp), unit="ms") if stamp is not None else None
            return _event(call, None, occurred_at=at or now, event_id=event_id)
        attempt_id = text(path(call, "metadata", "attempt_id"))
        stamp = call.get("start_timestamp")
        at = epoch_instant(NAME, str(stamp), unit="ms") if stamp is not None else None
        return m.IN_PROGRESS.event(
            NAME,
            raw_status=kind,
            external_call_id=call_id,
            attempt_id=attempt_id,
            occurred_at=at or now,
            event_id=event_id,
            raw=call,
        )


# -- REST adapter -------------------------------------------------------------------------------

_T = TypeVar("_T", bound="_RetellApi[Any]")


def agent_problems(agent: AgentSettings) -> list[Problem]:
    """What a Retell agent lacks: the caller id (from_number)."""
    if agent.phone_number:
        return []
    return [Problem("agent.phone_number", "retell needs a from_number to call from")]


class _RetellApi(HttpApi[TransportT]):
    name = NAME

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = RETELL_API,
        transport: TransportT | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        rate_limit: TokenBucket | float | None = None,
    ) -> None:
        if not api_key:
            raise ConfigurationError("api_key", api_key, "is required")
        self._api_key = api_key
        super().__init__(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            transport=transport,
            timeout=timeout,
            rate_limit=rate_limit,
        )

    check_agent = staticmethod(agent_problems)

    @classmethod
    def from_env(
        cls: type[_T], prefix: str = "RETELL_", environ: Mapping[str, str] | None = None, **kw: Any
    ) -> _T:
        """Build from ``{prefix}API_KEY`` and ``{prefix}BASE_URL`` (optional)."""
        key, base_url = api_key_from_env(prefix, environ)
        return cls(key, base_url=base_url or RETELL_API, **kw)

    def webhook(self, *, tolerance: timedelta = timedelta(minutes=5)) -> RetellWebhook:
        """The verifier for this account's webhooks (signed with the API key)."""
        return RetellWebhook(self._api_key, tolerance)

    def _build_place(self, request: DialRequest) -> Outgoing:
        agent = request.agent
        caller = request.caller_id or agent.phone_number
        if not caller:
            raise ProviderRejected(
                "no from_number: set agent.phone_number", provider=NAME, code="configuration"
            )
        payload: dict[str, Any] = {
            "from_number": caller,
            "to_number": request.to,
            "retell_llm_dynamic_variables": dict(request.variables),
            "metadata": {
                "attempt_id": request.attempt_id,
                "campaign_id": request.campaign_id,
                "recipient_id": request.recipient_id,
            },
        }
        if agent.external_agent_id:
            payload["override_agent_id"] = agent.external_agent_id
        return Outgoing.json("POST", "/v2/create-phone-call", payload)

    def _read_placed(self, data: Mapping[str, Any], request: DialRequest) -> PlacedCall | None:
        call_id = text(data.get("call_id"))
        if call_id is None:
            return None
        status = _STATUS.get(str(data.get("call_status", "")).lower(), m.QUEUED)
        return PlacedCall(NAME, call_id, status.status, raw=data)

    def _build_fetch_by_id(self, external_call_id: str) -> Outgoing:
        return Outgoing("GET", f"/v2/get-call/{quote(external_call_id, safe='')}")

    def _read_fetched(self, data: Mapping[str, Any], attempt_id: str) -> CallEvent:
        self._required_status(text(data.get("call_status")))
        return _event(data, attempt_id)


class RetellProvider(SyncHttpProvider, _RetellApi[httpx.BaseTransport]):
    """Retell, synchronous (:class:`~outdial.ports.CallProvider`): ``RetellProvider(api_key)``."""


class AsyncRetellProvider(AsyncHttpProvider, _RetellApi[httpx.AsyncBaseTransport]):
    """Retell, asyncio (:class:`~outdial.ports.AsyncCallProvider`); same arguments."""

"""ElevenLabs Conversational AI: outbound-call adapter, signed webhook, outcome table.

``ElevenLabsProvider`` / ``AsyncElevenLabsProvider`` place calls with
``POST /v1/convai/twilio/outbound-call`` (``xi-api-key`` header, JSON), or the
SIP-trunk route when ``agent.options["transport"] == "sip_trunk"``:
``agent_id`` is the agent's ``external_agent_id``, ``agent_phone_number_id``
its ``phone_number_id``; the personalisation variables and the attempt id go to
``conversation_initiation_client_data.dynamic_variables``. A greeting or prompt
on the request becomes a ``conversation_config_override`` (the agent must allow
overrides).

:class:`ElevenLabsWebhook` checks ``ElevenLabs-Signature: t=<unix>,v0=<hex>``
with v0 = HMAC-SHA256(secret, f"{t}.{body}"), within 30 minutes.
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
    ProviderUnavailable,
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
    redact,
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
    "ELEVENLABS_API",
    "AsyncElevenLabsProvider",
    "ElevenLabsProvider",
    "ElevenLabsWebhook",
    "elevenlabs_outcome",
]

ELEVENLABS_API = "https://api.elevenlabs.io"
NAME = "elevenlabs"

_CONVERSATION = {
    "initiated": m.QUEUED,
    "in-progress": m.IN_PROGRESS,
    "processing": m.IN_PROGRESS,  # the call is over, the transcript not yet ready
    "done": m.ANSWERED,
    "failed": m.ERROR_RETRY,
}
_FAILURE = {"busy": m.BUSY, "no-answer": m.NO_ANSWER, "unknown": m.ERROR_RETRY}


def elevenlabs_outcome(*, status: str | None = None, failure_reason: str | None = None) -> m.Mapped:
    """What an ElevenLabs conversation ``status`` or ``call_initiation_failure``
    ``failure_reason`` means.

    =======================================================  ==========  =========
    ElevenLabs                                               outcome     retryable
    =======================================================  ==========  =========
    status initiated, in-progress, processing                (not final)
    status done (``post_call_transcription``)                answered    no
    status failed                                            error       yes
    failure_reason busy                                      busy        yes
    failure_reason no-answer                                 no_answer   yes
    failure_reason unknown                                   error       yes
    anything else                                            error       yes (logged once)
    =======================================================  ==========  =========
    """
    if failure_reason is not None:
        reason = failure_reason.strip().lower()
        return _FAILURE.get(reason) or m.unknown_value(NAME, "failure_reason", reason)
    value = (status or "").strip().lower()
    return _CONVERSATION.get(value) or m.unknown_value(NAME, "status", value)


def _attempt_id(data: Mapping[str, Any]) -> str | None:
    for where in (
        ("conversation_initiation_client_data", "dynamic_variables", "attempt_id"),
        ("metadata", "conversation_initiation_client_data", "dynamic_variables", "attempt_id"),
        ("dynamic_variables", "attempt_id"),
    ):
        found = text(path(data, *where))
        if found:
            return found
    return None


# -- webhook ---------------------------------------------------------------------------------


@attrs.frozen
class ElevenLabsWebhook:
    """Verifies and parses ElevenLabs post-call webhooks.

    ``post_call_transcription`` (status ``done``: answered) and
    ``call_initiation_failure`` (``failure_reason``) become final events; other
    types (``post_call_audio``...) come back non-final without outcome.
    ``secret`` is the webhook's HMAC secret; ``tolerance`` bounds the age of the
    signed timestamp.
    """

    secret: str = attrs.field(repr=False)
    tolerance: timedelta = timedelta(minutes=30)
    provider: str = attrs.field(default=NAME, init=False)

    def verify(self, request: WebhookRequest, *, now: datetime) -> None:
        """Raise :class:`WebhookVerificationError` unless ElevenLabs signed
        ``request`` within the tolerance."""
        require_aware(now, "now")
        header = request.header("ElevenLabs-Signature")
        if not header:
            raise WebhookVerificationError(NAME, "missing ElevenLabs-Signature header")
        params = signature_params(NAME, header)
        stamps, digests = params.get("t", []), params.get("v0", [])
        if len(stamps) != 1 or not stamps[0].isdigit() or not digests:
            raise WebhookVerificationError(NAME, "ElevenLabs-Signature is not t=<unix>,v0=<hex>")
        check_fresh(NAME, epoch_instant(NAME, stamps[0], unit="s"), now, self.tolerance)
        digest = hmac_digest(self.secret, stamps[0].encode() + b"." + request.body)
        if not any(hex_matches(digest, d) for d in digests):
            raise WebhookVerificationError(NAME, "ElevenLabs-Signature does not match the body")

    def parse(self, request: WebhookRequest, *, now: datetime) -> CallEvent:
        """Verify ``request`` and turn the webhook into a :class:`CallEvent`."""
        self.verify(request, now=now)
        body = json_object(NAME, request.body)
        kind = text(body.get("type"))
        data = body.get("data")
        if kind is None or not isinstance(data, dict):
            raise WebhookPayloadError(NAME, "body needs a type and a data object")
        conversation = text(data.get("conversation_id"))
        stamp = body.get("event_timestamp")
        at = epoch_instant(NAME, str(stamp), unit="s") if stamp is not None else None
        if kind == "post_call_transcription":
            raw_status = text(data.get("status")) or ""
            mapped = elevenlabs_outcome(status=raw_status)
        elif kind == "call_initiation_failure":
            raw_status = text(data.get("failure_reason")) or "unknown"
            mapped = elevenlabs_outcome(failure_reason=raw_status)
        else:
            mapped, raw_status = m.IN_PROGRESS, kind
        return mapped.event(
            NAME,
            raw_status=raw_status,
            external_call_id=conversation,
            attempt_id=_attempt_id(data),
            occurred_at=at or now,
            duration_seconds=number(
                NAME, "call_duration_secs", path(data, "metadata", "call_duration_secs")
            ),
            error=raw_status if mapped.outcome is CallOutcome.ERROR else None,
            event_id=f"{conversation}:{kind}" if conversation else None,
            raw=data,
        )


# -- REST adapter -----------------------------------------------------------------------------

_T = TypeVar("_T", bound="_ElevenLabsApi[Any]")

_ROUTES = {
    "twilio": "/v1/convai/twilio/outbound-call",
    "sip_trunk": "/v1/convai/sip-trunk/outbound-call",
}


def agent_problems(agent: AgentSettings) -> list[Problem]:
    """What an ElevenLabs agent lacks: the agent id and the phone number id."""
    problems: list[Problem] = []
    if not agent.external_agent_id:
        problems.append(
            Problem("agent.external_agent_id", "elevenlabs needs the agent id (agent not synced)")
        )
    if not agent.phone_number_id:
        problems.append(
            Problem("agent.phone_number_id", "elevenlabs needs the agent_phone_number_id")
        )
    transport = agent.options.get("transport", "twilio")
    if transport not in _ROUTES:
        problems.append(
            Problem("agent.options.transport", f"{transport!r} is not twilio or sip_trunk")
        )
    return problems


class _ElevenLabsApi(HttpApi[TransportT]):
    name = NAME

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = ELEVENLABS_API,
        transport: TransportT | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        rate_limit: TokenBucket | float | None = None,
    ) -> None:
        if not api_key:
            raise ConfigurationError("api_key", api_key, "is required")
        super().__init__(
            base_url=base_url,
            headers={"xi-api-key": api_key, "Accept": "application/json"},
            transport=transport,
            timeout=timeout,
            rate_limit=rate_limit,
        )

    check_agent = staticmethod(agent_problems)

    @classmethod
    def from_env(
        cls: type[_T],
        prefix: str = "ELEVENLABS_",
        environ: Mapping[str, str] | None = None,
        **kw: Any,
    ) -> _T:
        """Build from ``{prefix}API_KEY`` and ``{prefix}BASE_URL`` (optional)."""
        key, base_url = api_key_from_env(prefix, environ)
        return cls(key, base_url=base_url or ELEVENLABS_API, **kw)

    @staticmethod
    def webhook(*, secret: str, tolerance: timedelta = timedelta(minutes=30)) -> ElevenLabsWebhook:
        """The verifier for post-call webhooks (their HMAC secret is not the API key)."""
        return ElevenLabsWebhook(secret, tolerance)

    def _build_place(self, request: DialRequest) -> Outgoing:
        agent = request.agent
        route = _ROUTES.get(agent.options.get("transport", "twilio"))
        if not agent.external_agent_id or not agent.phone_number_id or route is None:
            raise ProviderRejected(
                "elevenlabs needs agent.external_agent_id, agent.phone_number_id "
                "and options.transport twilio or sip_trunk",
                provider=NAME,
                code="configuration",
            )
        client_data: dict[str, Any] = {
            "dynamic_variables": {**request.variables, "attempt_id": request.attempt_id}
        }
        override: dict[str, Any] = {}
        if request.greeting:
            override["first_message"] = request.greeting
        if request.prompt:
            override["prompt"] = {"prompt": request.prompt}
        if override:
            client_data["conversation_config_override"] = {"agent": override}
        payload = {
            "agent_id": agent.external_agent_id,
            "agent_phone_number_id": agent.phone_number_id,
            "to_number": request.to,
            "conversation_initiation_client_data": client_data,
        }
        return Outgoing.json("POST", route, payload)

    def _read_placed(self, data: Mapping[str, Any], request: DialRequest) -> PlacedCall | None:
        if data.get("success") is False:
            raise ProviderUnavailable(
                redact(text(data.get("message")) or "elevenlabs reported success=false"),
                provider=NAME,
                code="success_false",
                placed=False,
            )
        conversation = text(data.get("conversation_id"))
        if conversation is None:
            return None
        return PlacedCall(NAME, conversation, m.QUEUED.status, raw=data)

    def _build_fetch_by_id(self, external_call_id: str) -> Outgoing:
        return Outgoing("GET", f"/v1/convai/conversations/{quote(external_call_id, safe='')}")

    def _read_fetched(self, data: Mapping[str, Any], attempt_id: str) -> CallEvent:
        status = self._required_status(text(data.get("status")))
        mapped = elevenlabs_outcome(status=status)
        return mapped.event(
            NAME,
            raw_status=status,
            external_call_id=text(data.get("conversation_id")),
            attempt_id=_attempt_id(data) or attempt_id,
            duration_seconds=number(
                NAME, "call_duration_secs", path(data, "metadata", "call_duration_secs")
            ),
            raw=data,
        )


class ElevenLabsProvider(SyncHttpProvider, _ElevenLabsApi[httpx.BaseTransport]):
    """ElevenLabs, synchronous (:class:`~outdial.ports.CallProvider`):
    ``ElevenLabsProvider(api_key)``."""


class AsyncElevenLabsProvider(AsyncHttpProvider, _ElevenLabsApi[httpx.AsyncBaseTransport]):
    """ElevenLabs, asyncio (:class:`~outdial.ports.AsyncCallProvider`); same arguments."""

"""Vapi: REST adapter, server-message webhook with its credential schemes, ended-reason table.

``VapiProvider`` / ``AsyncVapiProvider`` place calls with ``POST /call``
(Bearer API key, JSON): ``assistantId`` is ``agent.external_agent_id``,
``phoneNumberId`` is ``agent.phone_number_id``, ``customer.number`` the
recipient; the personalisation variables go to
``assistantOverrides.variableValues`` and the attempt id to
``assistantOverrides.metadata.attempt_id`` (and to the call's ``name`` when it
fits Vapi's 40 characters), where every server message finds it again.

:class:`VapiWebhook` accepts the credential types a Vapi server URL can use,
all parameters: :class:`VapiBearer` (``Authorization: Bearer ...``),
:class:`VapiHmac` (configurable header, timestamp header, payload format,
algorithm, encoding) and the legacy ``x-vapi-secret`` shared secret.
"""

from __future__ import annotations

import base64
import re
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
    ProviderError,
    ProviderRateLimited,
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
    unsupported,
)
from outdial.providers._signing import (
    HASHES,
    base64_matches,
    check_fresh,
    epoch_instant,
    hex_matches,
    hmac_digest,
    same,
)
from outdial.providers._wire import iso_instant, json_object, number, path, text

__all__ = [
    "VAPI_API",
    "AsyncVapiProvider",
    "VapiBearer",
    "VapiHmac",
    "VapiProvider",
    "VapiWebhook",
    "vapi_outcome",
]

VAPI_API = "https://api.vapi.ai"
NAME = "vapi"

_STATUS = {
    "scheduled": m.QUEUED,
    "queued": m.QUEUED,
    "ringing": m.RINGING,
    "in-progress": m.IN_PROGRESS,
    "forwarding": m.IN_PROGRESS,
}
_ANSWERED = frozenset(
    {
        "customer-ended-call",
        "assistant-said-end-call-phrase",
        "assistant-forwarded-call",
        "exceeded-max-duration",
        "silence-timed-out",
    }
)


def vapi_outcome(ended_reason: str) -> m.Mapped:
    """What a Vapi ``endedReason`` means. The enum has hundreds of values, so
    families are matched by prefix, suffix or a fragment, in this order:

    ==========================================================  ==============  =========
    endedReason                                                 outcome         retryable
    ==========================================================  ==============  =========
    customer-ended-call, assistant-ended-call*,                 answered        no
    assistant-said-end-call-phrase, assistant-forwarded-call,
    exceeded-max-duration, silence-timed-out
    voicemail                                                   voicemail       yes
    customer-did-not-answer, *sip-480*, *sip-408* (provider)    no_answer       yes
    customer-busy                                               busy            yes
    twilio-reported-customer-misdialed                          invalid_number  no
    *concurrency-limit-reached                                  error           yes
    *failed-to-connect*, *providerfault*, worker-*,             error           yes
    phone-call-provider-closed-websocket
    call.start.error-*, manually-canceled, *-deleted            error           no
    anything else                                               error           yes (logged once)
    ==========================================================  ==============  =========
    """
    reason = ended_reason.strip().lower()
    if reason in _ANSWERED or reason.startswith("assistant-ended-call"):
        return m.ANSWERED
    if reason == "voicemail":
        return m.VOICEMAIL
    if reason == "customer-did-not-answer" or "sip-480" in reason or "sip-408" in reason:
        return m.NO_ANSWER
    if reason == "customer-busy":
        return m.BUSY
    if reason == "twilio-reported-customer-misdialed":
        return m.INVALID_NUMBER
    if reason.endswith("concurrency-limit-reached"):
        return m.ERROR_RETRY
    if (
        "failed-to-connect" in reason
        or "providerfault" in reason
        or reason.startswith("worker-")
        or reason == "phone-call-provider-closed-websocket"
    ):
        return m.ERROR_RETRY
    if reason.startswith("call.start.error-") or reason == "manually-canceled":
        return m.ERROR_FINAL
    if reason.endswith("-deleted"):
        return m.ERROR_FINAL
    return m.unknown_value(NAME, "endedReason", reason)


def _call_outcome(status: str, ended_reason: str | None) -> m.Mapped:
    progress = _STATUS.get(status)
    if progress is not None:
        return progress
    if status == "ended" or ended_reason:
        return vapi_outcome(ended_reason or "")
    return m.unknown_value(NAME, "status", status)


# -- webhook credentials ------------------------------------------------------------------


@attrs.frozen
class VapiBearer:
    """A bearer-token credential: ``{header}: {prefix}{token}``."""

    token: str = attrs.field(repr=False)
    header: str = "Authorization"
    prefix: str = "Bearer "

    def check(self, request: WebhookRequest, now: datetime) -> str | None:
        """None when the request carries the token, else why not."""
        value = request.header(self.header)
        if value is None:
            return f"no {self.header} header"
        return None if same(f"{self.prefix}{self.token}", value.strip()) else "wrong bearer token"


@attrs.frozen
class _LegacySecret:
    secret: str = attrs.field(repr=False)
    header: str = "x-vapi-secret"

    def check(self, request: WebhookRequest, now: datetime) -> str | None:
        value = request.header(self.header)
        if value is None:
            return f"no {self.header} header"
        return None if same(self.secret, value.strip()) else f"wrong {self.header}"


_PLACEHOLDER = re.compile(r"\{(body|timestamp|method|url|svix-id)\}")


def _check_algorithm(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value.lower() not in HASHES:
        raise ConfigurationError(f"VapiHmac.{attribute.name}", value, "is not sha1/sha256/sha512")


def _check_encoding(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in ("hex", "base64"):
        raise ConfigurationError(f"VapiHmac.{attribute.name}", value, "is not hex or base64")


@attrs.frozen
class VapiHmac:
    """An HMAC credential as Vapi's ``HMACAuthenticationPlan`` describes it.

    The signed payload is ``payload_format`` with ``{body}`` (the raw body),
    ``{timestamp}`` (the ``timestamp_header`` value), ``{method}``, ``{url}`` and
    ``{svix-id}`` (the ``message_id_header`` value) filled in; the signature in
    ``signature_header`` is its HMAC in ``encoding`` (hex or base64) after an
    optional ``signature_prefix`` (``"sha256="``). When the payload includes the
    timestamp, one further than ``tolerance`` from ``now`` is refused (seconds
    or milliseconds since the epoch, or ISO 8601). ``secret_is_base64`` decodes
    the secret first.
    """

    secret: str = attrs.field(repr=False)
    algorithm: str = attrs.field(default="sha256", validator=_check_algorithm)
    signature_header: str = "x-signature"
    timestamp_header: str = "x-timestamp"
    payload_format: str = "{timestamp}.{body}"
    signature_prefix: str = ""
    encoding: str = attrs.field(default="hex", validator=_check_encoding)
    secret_is_base64: bool = False
    message_id_header: str | None = None
    tolerance: timedelta | None = timedelta(minutes=5)

    def check(self, request: WebhookRequest, now: datetime) -> str | None:
        """None when the request is signed with this credential, else why not."""
        given = request.header(self.signature_header)
        if given is None:
            return f"no {self.signature_header} header"
        given = given.strip()
        if self.signature_prefix:
            if not given.startswith(self.signature_prefix):
                return f"{self.signature_header} lacks the {self.signature_prefix!r} prefix"
            given = given[len(self.signature_prefix) :]
        values: dict[str, bytes] = {"body": request.body}
        for placeholder in set(_PLACEHOLDER.findall(self.payload_format)):
            if placeholder == "timestamp":
                stamp = request.header(self.timestamp_header)
                if stamp is None:
                    return f"no {self.timestamp_header} header"
                if self.tolerance is not None:
                    try:
                        check_fresh(NAME, _instant(stamp), now, self.tolerance)
                    except WebhookVerificationError as exc:
                        return exc.reason
                values["timestamp"] = stamp.strip().encode()
            elif placeholder == "svix-id":
                msg_id = request.header(self.message_id_header) if self.message_id_header else None
                if msg_id is None:
                    return "no message id header for {svix-id}"
                values["svix-id"] = msg_id.strip().encode()
            elif placeholder == "method":
                values["method"] = request.method.upper().encode()
            elif placeholder == "url":
                values["url"] = request.url.encode()
        payload = _fill(self.payload_format, values)
        key: str | bytes = self.secret
        if self.secret_is_base64:
            key = base64.b64decode(self.secret)
        digest = hmac_digest(key, payload, self.algorithm)
        ok = hex_matches(digest, given) if self.encoding == "hex" else base64_matches(digest, given)
        return None if ok else "HMAC signature does not match"


def _fill(template: str, values: Mapping[str, bytes]) -> bytes:
    """``template`` with each placeholder replaced once (the body is never re-read)."""
    out = bytearray()
    last = 0
    for match in _PLACEHOLDER.finditer(template):
        out += template[last : match.start()].encode()
        out += values[match.group(1)]
        last = match.end()
    out += template[last:].encode()
    return bytes(out)


def _instant(stamp: str) -> datetime:
    try:
        return epoch_instant(NAME, stamp)
    except WebhookVerificationError:
        try:
            at = iso_instant(NAME, "timestamp", stamp)
        except WebhookPayloadError:
            at = None
        if at is None:
            raise WebhookVerificationError(NAME, f"unreadable timestamp {stamp!r}") from None
        return at


def _bearer(value: VapiBearer | str | None) -> VapiBearer | None:
    return VapiBearer(value) if isinstance(value, str) else value


def _hmac(value: VapiHmac | str | None) -> VapiHmac | None:
    return VapiHmac(value) if isinstance(value, str) else value


@attrs.frozen
class VapiWebhook:
    """Verifies and parses Vapi server messages (``{"message": {...}}``).

    Give one or more credentials: ``bearer`` (a token or :class:`VapiBearer`),
    ``hmac`` (a secret with the defaults, or :class:`VapiHmac`) and ``secret``
    (the legacy ``x-vapi-secret`` value). A request passes when any configured
    credential verifies (so a credential can be rotated).

    ``status-update`` and ``end-of-call-report`` become call events; any other
    message type (transcript, tool-calls, ...) a non-final event with
    ``raw_status`` naming the type and no outcome.
    """

    bearer: VapiBearer | None = attrs.field(default=None, converter=_bearer)
    hmac: VapiHmac | None = attrs.field(default=None, converter=_hmac)
    secret: str | None = attrs.field(default=None, repr=False)
    provider: str = attrs.field(default=NAME, init=False)

    def __attrs_post_init__(self) -> None:
        if self.bearer is None and self.hmac is None and not self.secret:
            raise ConfigurationError(
                "VapiWebhook", None, "needs a credential: bearer, hmac or secret"
            )

    def verify(self, request: WebhookRequest, *, now: datetime) -> None:
        """Raise :class:`WebhookVerificationError` unless a credential verifies."""
        require_aware(now, "now")
        checks: list[VapiBearer | VapiHmac | _LegacySecret] = [
            c for c in (self.bearer, self.hmac) if c is not None
        ]
        if self.secret:
            checks.append(_LegacySecret(self.secret))
        reasons = []
        for credential in checks:
            reason = credential.check(request, now)
            if reason is None:
                return
            reasons.append(reason)
        raise WebhookVerificationError(NAME, "; ".join(reasons))

    def parse(self, request: WebhookRequest, *, now: datetime) -> CallEvent:
        """Verify ``request`` and turn the server message into a :class:`CallEvent`."""
        self.verify(request, now=now)
        message = json_object(NAME, request.body).get("message")
        if not isinstance(message, dict):
            raise WebhookPayloadError(NAME, "body has no message object")
        kind = text(message.get("type"))
        if kind is None:
            raise WebhookPayloadError(NAME, "message has no type")
        call = message.get("call")
        if not isinstance(call, dict):
            call = {}
        call_id = text(path(call, "id"))
        ended_reason = text(message.get("endedReason")) or text(path(call, "endedReason"))
        if kind == "end-of-call-report":
            mapped = vapi_outcome(ended_reason or "")
            raw_status = ended_reason or ""
        elif kind == "status-update":
            status = (text(message.get("status")) or "").lower()
            mapped = _call_outcome(status, ended_reason)
            raw_status = ended_reason if mapped.final and ended_reason else status
        else:
            mapped, raw_status = m.IN_PROGRESS, kind
        occurred = message.get("timestamp")
        occurred_at = (
            epoch_instant(NAME, str(occurred)) if isinstance(occurred, (int, float)) else None
        )
        return mapped.event(
            NAME,
            raw_status=raw_status,
            external_call_id=call_id,
            attempt_id=_attempt_id(call),
            occurred_at=occurred_at or now,
            duration_seconds=_duration(message),
            error=ended_reason if mapped.outcome is CallOutcome.ERROR else None,
            event_id=f"{call_id}:{kind}:{raw_status}" if call_id else None,
            raw=message,
        )


def _attempt_id(call: Mapping[str, Any]) -> str | None:
    return (
        text(path(call, "assistantOverrides", "metadata", "attempt_id"))
        or text(path(call, "metadata", "attempt_id"))
        or text(path(call, "name"))
    )


def _duration(message: Mapping[str, Any]) -> float | None:
    seconds = number(NAME, "durationSeconds", message.get("durationSeconds"))
    if seconds is not None:
        return seconds
    started = iso_instant(NAME, "startedAt", message.get("startedAt"))
    ended = iso_instant(NAME, "endedAt", message.get("endedAt"))
    if started is not None and ended is not None:
        return max(0.0, (ended - started).total_seconds())
    return None


# -- REST adapter -----------------------------------------------------------------------------

_T = TypeVar("_T", bound="_VapiApi[Any]")


def agent_problems(agent: AgentSettings) -> list[Problem]:
    """What a Vapi agent lacks: the assistant id and the phone number id."""
    problems: list[Problem] = []
    if not agent.external_agent_id:
        problems.append(
            Problem("agent.external_agent_id", "vapi needs the assistant id (agent not synced)")
        )
    if not agent.phone_number_id:
        problems.append(
            Problem("agent.phone_number_id", "vapi needs the phoneNumberId to call from")
        )
    return problems


class _VapiApi(HttpApi[TransportT]):
    name = NAME

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = VAPI_API,
        transport: TransportT | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        rate_limit: TokenBucket | float | None = None,
    ) -> None:
        if not api_key:
            raise ConfigurationError("api_key", api_key, "is required")
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
        cls: type[_T], prefix: str = "VAPI_", environ: Mapping[str, str] | None = None, **kw: Any
    ) -> _T:
        """Build from ``{prefix}API_KEY`` and ``{prefix}BASE_URL`` (optional)."""
        key, base_url = api_key_from_env(prefix, environ)
        return cls(key, base_url=base_url or VAPI_API, **kw)

    @staticmethod
    def webhook(
        *,
        bearer: VapiBearer | str | None = None,
        hmac: VapiHmac | str | None = None,
        secret: str | None = None,
    ) -> VapiWebhook:
        """The verifier for this account's server messages (the server-URL
        credential is not the API key, so it is given here)."""
        return VapiWebhook(bearer=bearer, hmac=hmac, secret=secret)

    def _build_place(self, request: DialRequest) -> Outgoing:
        agent = request.agent
        if not agent.external_agent_id or not agent.phone_number_id:
            raise ProviderRejected(
                "vapi needs agent.external_agent_id and agent.phone_number_id",
                provider=NAME,
                code="configuration",
            )
        overrides: dict[str, Any] = {
            "variableValues": dict(request.variables),
            "metadata": {
                "attempt_id": request.attempt_id,
                "campaign_id": request.campaign_id,
                "recipient_id": request.recipient_id,
            },
        }
        if request.greeting:
            overrides["firstMessage"] = request.greeting
        if agent.options.get("server_url"):
            overrides["server"] = {"url": agent.options["server_url"]}
        payload: dict[str, Any] = {
            "assistantId": agent.external_agent_id,
            "phoneNumberId": agent.phone_number_id,
            "customer": {"number": request.to},
            "assistantOverrides": overrides,
        }
        if len(request.attempt_id) <= 40:
            payload["name"] = request.attempt_id
        return Outgoing.json("POST", "/call", payload)

    def _read_placed(self, data: Mapping[str, Any], request: DialRequest) -> PlacedCall | None:
        call_id = text(data.get("id"))
        if call_id is None:
            if path(data, "subscriptionLimits", "concurrencyBlocked") is True:
                raise ProviderRateLimited(
                    "vapi concurrency limit reached",
                    provider=NAME,
                    code="concurrency",
                    placed=False,
                )
            return None
        status = _STATUS.get(str(data.get("status", "")).lower(), m.QUEUED)
        return PlacedCall(NAME, call_id, status.status, raw=data)

    def _build_cancel(self, external_call_id: str) -> Outgoing:
        return self._build_fetch_by_id(external_call_id)

    def _next_cancel(
        self, previous: Outgoing, data: Mapping[str, Any], external_call_id: str
    ) -> Outgoing | None:
        # A live call is ended through its control URL; an ended one needs nothing.
        if previous.method != "GET" or data.get("status") == "ended":
            return None
        control = text(path(data, "monitor", "controlUrl"))
        if control is None:
            raise unsupported(NAME, "cancelling a call without a monitor.controlUrl")
        return Outgoing.json("POST", control, {"type": "end-call"})

    def _build_fetch_by_id(self, external_call_id: str) -> Outgoing:
        return Outgoing("GET", f"/call/{quote(external_call_id, safe='')}")

    def _read_fetched(self, data: Mapping[str, Any], attempt_id: str) -> CallEvent:
        status = self._required_status(text(data.get("status"))).lower()
        ended_reason = text(data.get("endedReason"))
        mapped = _call_outcome(status, ended_reason)
        return mapped.event(
            NAME,
            raw_status=ended_reason if mapped.final and ended_reason else status,
            external_call_id=text(data.get("id")),
            attempt_id=attempt_id,
            duration_seconds=_duration(data),
            raw=data,
        )

    def _error_class(
        self, status: int, code: str | int | None, message: str
    ) -> type[ProviderError] | None:
        if "concurrency" in message.lower():
            return ProviderRateLimited
        return None


class VapiProvider(SyncHttpProvider, _VapiApi[httpx.BaseTransport]):
    """Vapi, synchronous (:class:`~outdial.ports.CallProvider`): ``VapiProvider(api_key)``."""


class AsyncVapiProvider(AsyncHttpProvider, _VapiApi[httpx.AsyncBaseTransport]):
    """Vapi, asyncio (:class:`~outdial.ports.AsyncCallProvider`); same arguments."""

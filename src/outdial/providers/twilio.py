"""Twilio Programmable Voice: REST adapter, status-callback webhook, outcome table.

``TwilioProvider`` (sync) and ``AsyncTwilioProvider`` place calls with
``POST /2010-04-01/Accounts/{AccountSid}/Calls.json`` (form-encoded, HTTP Basic
with the Auth Token or an API key). The attempt id travels in the query of the
``StatusCallback`` URL (``?attempt_id=...``) and comes back with every status
callback; :class:`TwilioWebhook` checks ``X-Twilio-Signature`` exactly as
Twilio's own ``RequestValidator`` does and turns the callback into a
:class:`~outdial.ports.CallEvent`.

What the call does once answered is the agent's: ``agent.options["url"]`` (a
TwiML URL, which gets ``attempt_id`` and the personalisation variables as query
parameters), ``agent.options["twiml"]`` or ``agent.options["application_sid"]``.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import SplitResult, parse_qsl, quote, urlsplit, urlunsplit

import attrs
import httpx

from outdial._time import require_aware
from outdial.campaign import AgentSettings
from outdial.errors import (
    ConfigurationError,
    Problem,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    WebhookPayloadError,
    WebhookVerificationError,
)
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
)
from outdial.providers._signing import hmac_digest, same
from outdial.providers._wire import add_query, form_pairs, json_object, number, text

__all__ = [
    "TWILIO_API",
    "AsyncTwilioProvider",
    "TwilioProvider",
    "TwilioWebhook",
    "twilio_outcome",
]

TWILIO_API = "https://api.twilio.com"
NAME = "twilio"

#: every progress event, so ringing/answered are seen (Twilio's default is only completed)
DEFAULT_EVENTS = ("initiated", "ringing", "answered", "completed")

_PROGRESS = {
    "queued": m.QUEUED,
    "initiated": m.QUEUED,
    "ringing": m.RINGING,
    "in-progress": m.IN_PROGRESS,
}
_INVALID_SIP = frozenset({404, 410, 484, 604})
_REJECTED_CODES = frozenset({21211, 21215, 13227, 32205})  # invalid To, geo permissions
_RATE_LIMIT_CODES = frozenset({20429})
_AUTH_CODES = frozenset({20003})
_NOT_FOUND_CODES = frozenset({20404})


def twilio_outcome(
    call_status: str, answered_by: str | None = None, sip_response_code: int | None = None
) -> m.Mapped:
    """What a Twilio ``CallStatus`` (+ ``AnsweredBy`` + ``SipResponseCode``) means.

    =====================================  ==============  =========
    Twilio                                 outcome         retryable
    =====================================  ==============  =========
    queued, initiated, ringing, in-progress (not final)
    completed, AnsweredBy human/unknown/-  answered        no
    completed, AnsweredBy machine_*        voicemail       yes
    completed, AnsweredBy fax              invalid_number  no
    busy                                   busy            yes
    no-answer                              no_answer       yes
    failed, SIP 404/410/484/604            invalid_number  no
    failed, SIP 480                        no_answer       yes
    failed, SIP 603                        declined        no
    failed, other                          error           yes
    canceled (we cancelled it)             error           no
    anything else                          error           yes (logged once)
    =====================================  ==============  =========
    """
    status = call_status.strip().lower()
    progress = _PROGRESS.get(status)
    if progress is not None:
        return progress
    if status == "completed":
        by = (answered_by or "").strip().lower()
        if by in ("", "human", "unknown"):
            return m.ANSWERED
        if by.startswith("machine_"):
            return m.VOICEMAIL
        if by == "fax":
            return m.INVALID_NUMBER
        return m.unknown_value(NAME, "AnsweredBy", by)
    if status == "busy":
        return m.BUSY
    if status == "no-answer":
        return m.NO_ANSWER
    if status == "failed":
        if sip_response_code in _INVALID_SIP:
            return m.INVALID_NUMBER
        if sip_response_code == 480:
            return m.NO_ANSWER
        if sip_response_code == 603:
            return m.DECLINED
        return m.ERROR_RETRY
    if status == "canceled":
        return m.ERROR_FINAL
    return m.unknown_value(NAME, "CallStatus", status)


# -- webhook ----------------------------------------------------------------------------------


def _port(parts: SplitResult) -> int | None:
    try:
        return parts.port
    except ValueError:  # not a number: no variant to try
        return None


def _without_port(url: str) -> str:
    parts = urlsplit(url)
    if _port(parts) is None:
        return url
    host = parts.netloc.rsplit(":", 1)[0]
    return urlunsplit(parts._replace(netloc=host))


def _with_port(url: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1].rsplit("]", 1)[-1]
    if ":" in host:  # a port already (or an unreadable one)
        return url
    port = 443 if parts.scheme == "https" else 80
    return urlunsplit(parts._replace(netloc=f"{parts.netloc}:{port}"))


def _query(url: str) -> str:
    """``urlsplit(url).query``, without its cost for the usual URL."""
    if not url[:1].isalnum() or "\t" in url or "\r" in url or "\n" in url:
        return urlsplit(url).query  # what urlsplit strips first: its own rules
    return url.partition("#")[0].partition("?")[2]


def _urls(url: str) -> Iterator[str]:
    """The URLs a signature may cover, in the order tried: as received, without its
    port, with the scheme's default port (each variant made only when needed)."""
    yield url
    tried = {url}
    for variant in (_without_port, _with_port):
        other = variant(url)
        if other not in tried:
            tried.add(other)
            yield other


_ALGORITHMS = {"HMAC_SHA1": "sha1", "HMAC_SHA256": "sha256"}


@attrs.frozen
class TwilioWebhook:
    """Verifies and parses Twilio status callbacks.

    ``auth_token`` is the account's Auth Token (or, for webhooks Twilio signs
    with a SharedKey and announces in ``X-Twilio-Webhooks-Signature-Settings``,
    that key's secret). The signature is base64(HMAC(token, url + params)), where
    params are the form fields sorted by name, each name's distinct values
    sorted; a JSON body is instead covered by ``bodySHA256`` in the URL. The URL
    is tried as received, without its port and with the scheme's default port,
    as Twilio's own ``RequestValidator`` does. ``request.url`` must be the public
    URL Twilio called (scheme, host, path and query), not one rewritten by a
    proxy.
    """

    auth_token: str = attrs.field(repr=False)
    provider: str = attrs.field(default=NAME, init=False)

    def verify(self, request: WebhookRequest, *, now: datetime | None = None) -> None:
        """Raise :class:`WebhookVerificationError` unless Twilio signed ``request``."""
        self._verified(request)

    def _verified(
        self, request: WebhookRequest
    ) -> tuple[list[tuple[str, str]], list[tuple[str, str]] | None]:
        """Check the signature; the URL's query pairs and the form body's pairs (None
        when a ``bodySHA256`` covers the body), read once for :meth:`parse` too."""
        signature = request.header("X-Twilio-Signature")
        if not signature:
            raise WebhookVerificationError(NAME, "missing X-Twilio-Signature header")
        algorithm = self._algorithm(request.header("X-Twilio-Webhooks-Signature-Settings"))
        query = parse_qsl(_query(request.url), keep_blank_values=True)
        body_hash = next((v for k, v in query if k == "bodySHA256" and v), None)
        pairs: list[tuple[str, str]] | None = None
        if body_hash:
            if not same(hashlib.sha256(request.body).hexdigest(), body_hash):
                raise WebhookVerificationError(NAME, "body does not match bodySHA256")
            signed = b""
        else:
            pairs = form_pairs(NAME, request.body)
            # by name, then each name's distinct values in order
            signed = "".join([name + value for name, value in sorted(set(pairs))]).encode()
        given = signature.strip().encode()
        for url in _urls(request.url):
            digest = hmac_digest(self.auth_token, url.encode() + signed, algorithm)
            if same(base64.b64encode(digest), given):
                return query, pairs
        raise WebhookVerificationError(NAME, "X-Twilio-Signature does not match the request")

    @staticmethod
    def _algorithm(settings: str | None) -> str:
        for part in (settings or "").split(","):
            name, sep, value = part.partition("=")
            if sep and name.strip() == "algorithm" and value.strip():
                algorithm = _ALGORITHMS.get(value.strip().upper())
                if algorithm is None:
                    raise WebhookVerificationError(
                        NAME, f"unsupported signature algorithm {value.strip()!r}"
                    )
                return algorithm
        return "sha1"

    def parse(self, request: WebhookRequest, *, now: datetime) -> CallEvent:
        """Verify ``request`` and turn the status callback into a :class:`CallEvent`."""
        require_aware(now, "now")
        pairs, form = self._verified(request)
        query: dict[str, str] = {}
        for name, value in pairs:
            query.setdefault(name, value)
        if "bodySHA256" in query or form is None:
            fields: Mapping[str, Any] = json_object(NAME, request.body)
        else:
            fields = dict(reversed(form))  # first value wins
        call_sid = text(fields.get("CallSid"))
        call_status = text(fields.get("CallStatus"))
        if call_sid is None or call_status is None:
            raise WebhookPayloadError(NAME, "status callback without CallSid or CallStatus")
        sequence = number(NAME, "SequenceNumber", fields.get("SequenceNumber"))
        sip = number(NAME, "SipResponseCode", fields.get("SipResponseCode"))
        sip_code = int(sip) if sip is not None else None
        mapped = twilio_outcome(call_status, text(fields.get("AnsweredBy")), sip_code)
        seq = int(sequence) if sequence is not None else None
        error = None
        if mapped.final and mapped.outcome is not None and sip_code is not None:
            error = f"{call_status} (SIP {sip_code})"
        return mapped.event(
            NAME,
            raw_status=call_status,
            external_call_id=call_sid,
            attempt_id=query.get("attempt_id") or None,
            sequence=seq,
            occurred_at=_rfc2822(text(fields.get("Timestamp"))) or now,
            duration_seconds=number(NAME, "CallDuration", fields.get("CallDuration")),
            error=error,
            event_id=request.header("I-Twilio-Idempotency-Token")
            or f"{call_sid}:{seq if seq is not None else call_status}",
            raw=fields,
        )


def _rfc2822(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        at = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        raise WebhookPayloadError(NAME, f"Timestamp is not an RFC 2822 date: {value!r}") from None
    if at.tzinfo is None:
        raise WebhookPayloadError(NAME, f"Timestamp has no time zone: {value!r}")
    return at


# -- REST adapter ---------------------------------------------------------------------------

_T = TypeVar("_T", bound="_TwilioApi[Any]")


def agent_problems(agent: AgentSettings) -> list[Problem]:
    """What a Twilio agent lacks: a caller id and something to run once answered."""
    problems: list[Problem] = []
    if not agent.phone_number:
        problems.append(Problem("agent.phone_number", "twilio needs a caller id (From) number"))
    if not any(agent.options.get(k) for k in ("url", "twiml", "application_sid")):
        problems.append(
            Problem(
                "agent.options",
                "twilio needs options.url (TwiML URL), options.twiml or options.application_sid",
            )
        )
    return problems


class _TwilioApi(HttpApi[TransportT]):
    name = NAME

    def __init__(
        self,
        account_sid: str,
        auth_token: str | None = None,
        *,
        api_key_sid: str | None = None,
        api_key_secret: str | None = None,
        status_callback_url: str | None = None,
        status_callback_events: Sequence[str] = DEFAULT_EVENTS,
        base_url: str = TWILIO_API,
        transport: TransportT | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        rate_limit: TokenBucket | float | None = None,
    ) -> None:
        if not account_sid:
            raise ConfigurationError("account_sid", account_sid, "is required")
        if api_key_sid or api_key_secret:
            if not (api_key_sid and api_key_secret):
                raise ConfigurationError(
                    "api_key_secret", None, "api_key_sid and api_key_secret go together"
                )
            user, password = api_key_sid, api_key_secret
        elif auth_token:
            user, password = account_sid, auth_token
        else:
            raise ConfigurationError("auth_token", None, "give auth_token or an API key pair")
        self.account_sid = account_sid
        self._auth_token = auth_token
        self.status_callback_url = status_callback_url
        self.status_callback_events = tuple(status_callback_events)
        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._calls = f"/2010-04-01/Accounts/{quote(account_sid, safe='')}/Calls"
        super().__init__(
            base_url=base_url,
            headers={"Authorization": f"Basic {basic}", "Accept": "application/json"},
            transport=transport,
            timeout=timeout,
            rate_limit=rate_limit,
        )

    check_agent = staticmethod(agent_problems)

    @classmethod
    def from_env(
        cls: type[_T], prefix: str = "TWILIO_", environ: Mapping[str, str] | None = None, **kw: Any
    ) -> _T:
        """Build from ``{prefix}ACCOUNT_SID``, ``{prefix}AUTH_TOKEN`` (or
        ``{prefix}API_KEY_SID`` + ``{prefix}API_KEY_SECRET``),
        ``{prefix}STATUS_CALLBACK_URL`` and ``{prefix}BASE_URL`` (optional)."""
        env = os.environ if environ is None else environ
        sid = env.get(f"{prefix}ACCOUNT_SID")
        if not sid:
            raise ConfigurationError(f"{prefix}ACCOUNT_SID", None, "is not set")
        return cls(
            sid,
            env.get(f"{prefix}AUTH_TOKEN") or None,
            api_key_sid=env.get(f"{prefix}API_KEY_SID") or None,
            api_key_secret=env.get(f"{prefix}API_KEY_SECRET") or None,
            status_callback_url=env.get(f"{prefix}STATUS_CALLBACK_URL") or None,
            base_url=env.get(f"{prefix}BASE_URL") or TWILIO_API,
            **kw,
        )

    def webhook(self) -> TwilioWebhook:
        """The verifier for this account's status callbacks (needs the Auth Token)."""
        if not self._auth_token:
            raise ConfigurationError("auth_token", None, "is needed to verify Twilio webhooks")
        return TwilioWebhook(self._auth_token)

    # -- hooks ----------------------------------------------------------------------------

    def _build_place(self, request: DialRequest) -> Outgoing:
        agent = request.agent
        options = agent.options
        caller = request.caller_id or agent.phone_number
        if not caller:
            raise ProviderRejected(
                "no caller id: set agent.phone_number", provider=NAME, code="configuration"
            )
        fields: list[tuple[str, str]] = [("To", request.to), ("From", caller)]
        if options.get("url"):
            params = [("attempt_id", request.attempt_id), *sorted(request.variables.items())]
            fields.append(("Url", add_query(options["url"], params)))
        elif options.get("twiml"):
            fields.append(("Twiml", options["twiml"]))
        elif options.get("application_sid"):
            fields.append(("ApplicationSid", options["application_sid"]))
        else:
            raise ProviderRejected(
                "agent.options needs url, twiml or application_sid",
                provider=NAME,
                code="configuration",
            )
        callback = options.get("status_callback_url") or self.status_callback_url
        if callback:
            fields.append(
                ("StatusCallback", add_query(callback, [("attempt_id", request.attempt_id)]))
            )
            fields.append(("StatusCallbackMethod", "POST"))
            fields.extend(("StatusCallbackEvent", e) for e in self.status_callback_events)
        for option, field in (
            ("machine_detection", "MachineDetection"),
            ("timeout", "Timeout"),
            ("time_limit", "TimeLimit"),
        ):
            if options.get(option):
                fields.append((field, options[option]))
        return Outgoing.form("POST", f"{self._calls}.json", fields)

    def _read_placed(self, data: Mapping[str, Any], request: DialRequest) -> PlacedCall | None:
        sid = text(data.get("sid"))
        if sid is None:
            return None
        mapped = _PROGRESS.get(str(data.get("status", "")).lower(), m.QUEUED)
        return PlacedCall(NAME, sid, mapped.status, raw=data)

    def _build_cancel(self, external_call_id: str) -> Outgoing:
        return self._update(external_call_id, "canceled")

    def _next_cancel(
        self, previous: Outgoing, data: Mapping[str, Any], external_call_id: str
    ) -> Outgoing | None:
        # "canceled" only stops a queued or ringing call; an answered one is hung up.
        if previous.content == b"Status=canceled" and data.get("status") == "in-progress":
            return self._update(external_call_id, "completed")
        return None

    def _update(self, sid: str, status: str) -> Outgoing:
        return Outgoing.form(
            "POST", f"{self._calls}/{quote(sid, safe='')}.json", [("Status", status)]
        )

    def _build_fetch_by_id(self, external_call_id: str) -> Outgoing:
        return Outgoing("GET", f"{self._calls}/{quote(external_call_id, safe='')}.json")

    def _read_fetched(self, data: Mapping[str, Any], attempt_id: str) -> CallEvent:
        status = self._required_status(text(data.get("status")))
        mapped = twilio_outcome(status, text(data.get("answered_by")))
        return mapped.event(
            NAME,
            raw_status=status,
            external_call_id=text(data.get("sid")),
            attempt_id=attempt_id,
            duration_seconds=number(NAME, "duration", data.get("duration")),
            raw=data,
        )

    def _error_class(
        self, status: int, code: str | int | None, message: str
    ) -> type[ProviderError] | None:
        if code in _REJECTED_CODES:
            return ProviderRejected
        if code in _RATE_LIMIT_CODES:
            return ProviderRateLimited
        if code in _AUTH_CODES:
            return ProviderAuthError
        return None

    def _is_not_found(self, status: int, code: str | int | None, message: str) -> bool:
        return code in _NOT_FOUND_CODES


class TwilioProvider(SyncHttpProvider, _TwilioApi[httpx.BaseTransport]):
    """Twilio, synchronous (:class:`~outdial.ports.CallProvider`).

    ``TwilioProvider(account_sid, auth_token, status_callback_url=...)``;
    ``transport=``/``base_url=`` point it elsewhere (tests), ``timeout=`` and
    ``rate_limit=`` (a :class:`TokenBucket` shared per account, or calls per
    second) bound it. :meth:`from_env` reads ``TWILIO_*`` variables.
    """


class AsyncTwilioProvider(AsyncHttpProvider, _TwilioApi[httpx.AsyncBaseTransport]):
    """Twilio, asyncio (:class:`~outdial.ports.AsyncCallProvider`); same arguments."""

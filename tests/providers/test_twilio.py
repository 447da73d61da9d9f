"""Twilio: the Calls.json wire format, its error codes, cancel, status callbacks
and X-Twilio-Signature checked against the official twilio RequestValidator."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from outdial.campaign import AgentSettings
from outdial.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    WebhookPayloadError,
    WebhookVerificationError,
)
from outdial.outcomes import CallOutcome
from outdial.ports import CallStatus, WebhookRequest
from outdial.providers import AsyncTwilioProvider, TwilioProvider, TwilioWebhook, twilio_outcome

from .cases import dial
from .servers import FakeTwilio, LoopbackServer, Reply

AGENT = AgentSettings(
    provider="twilio",
    phone_number="+12125550100",
    options={"url": "https://app.example/twiml?flow=a", "machine_detection": "Enable"},
)
CALLBACK = "https://app.example/webhooks/twilio?tenant=7"


def adapter(server: FakeTwilio, **kw: object) -> TwilioProvider:
    return TwilioProvider(
        server.account_sid,
        server.auth_token,
        status_callback_url=CALLBACK,
        base_url=server.url,
        **kw,  # type: ignore[arg-type]
    )


def test_a_call_is_created_with_the_recipient_caller_id_twiml_and_every_status_event(
    twilio_server: FakeTwilio,
) -> None:
    with adapter(twilio_server) as twilio:
        placed = twilio.place_call(dial(AGENT))
    sent = twilio_server.last
    assert sent.method == "POST"
    assert sent.path == f"/2010-04-01/Accounts/{twilio_server.account_sid}/Calls.json"
    assert sent.basic_auth() == (twilio_server.account_sid, twilio_server.auth_token)
    form = sent.form()
    assert form["To"] == ["+12125554567"]
    assert form["From"] == ["+12125550100"]
    twiml = urlsplit(form["Url"][0])
    assert twiml.netloc == "app.example"
    assert parse_qs(twiml.query) == {
        "flow": ["a"],
        "attempt_id": ["att-0001"],
        "balance": ["12.50"],
        "first_name": ["Ann"],
    }
    callback = urlsplit(form["StatusCallback"][0])
    assert parse_qs(callback.query) == {"tenant": ["7"], "attempt_id": ["att-0001"]}
    assert form["StatusCallbackMethod"] == ["POST"]
    assert form["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
    assert form["MachineDetection"] == ["Enable"]
    assert placed.external_call_id.startswith("CA")
    assert placed.status is CallStatus.QUEUED


def test_an_api_key_authenticates_with_the_account_still_in_the_path(
    twilio_server: FakeTwilio,
) -> None:
    twilio_server.account_sid = "AC" + "1" * 32
    twilio_server._prefix = f"/2010-04-01/Accounts/{twilio_server.account_sid}/Calls"
    with (
        TwilioProvider(
            twilio_server.account_sid,
            api_key_sid="SK123",
            api_key_secret="secret",
            base_url=twilio_server.url,
        ) as twilio,
        pytest.raises(ProviderAuthError),
    ):
        twilio.place_call(dial(AGENT))
    assert twilio_server.last.basic_auth() == ("SK123", "secret")
    assert twilio_server.last.path.startswith(f"/2010-04-01/Accounts/{twilio_server.account_sid}/")


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"twiml": "<Response><Say>Hi</Say></Response>"}, "Twiml"),
        ({"application_sid": "AP1"}, "ApplicationSid"),
    ],
)
def test_twiml_or_an_application_can_stand_in_for_a_url(
    twilio_server: FakeTwilio, options: dict[str, str], field: str
) -> None:
    agent = AgentSettings(provider="twilio", phone_number="+12125550100", options=options)
    with adapter(twilio_server) as twilio:
        twilio.place_call(dial(agent))
    form = twilio_server.last.form()
    assert form[field] == [next(iter(options.values()))]
    assert "Url" not in form


def test_an_agent_with_nothing_to_run_is_refused_before_any_request(
    twilio_server: FakeTwilio,
) -> None:
    agent = AgentSettings(provider="twilio", phone_number="+12125550100")
    with adapter(twilio_server) as twilio, pytest.raises(ProviderRejected) as caught:
        twilio.place_call(dial(agent))
    assert caught.value.placed is False
    assert twilio_server.requests == []


def test_an_invalid_number_is_rejected_for_good_with_its_code_and_a_masked_message(
    twilio_server: FakeTwilio,
) -> None:
    with adapter(twilio_server) as twilio, pytest.raises(ProviderRejected) as caught:
        twilio.place_call(dial(AGENT, to="2125554567"))
    error = caught.value
    assert error.code == 21211
    assert error.status_code == 400
    assert error.retryable is False
    assert error.placed is False
    assert "not a valid phone number" in error.message
    assert "2125554567" not in str(error)
    assert "4567" in error.message


@pytest.mark.parametrize(
    ("code", "status", "kind", "retryable"),
    [
        (21215, 400, ProviderRejected, False),  # geo permissions
        (13227, 400, ProviderRejected, False),
        (32205, 400, ProviderRejected, False),
        (20429, 400, ProviderRateLimited, True),  # too many concurrent requests
        (20003, 400, ProviderAuthError, False),
    ],
)
def test_twilio_error_codes_decide_the_kind_of_failure(
    twilio_server: FakeTwilio, code: int, status: int, kind: type, retryable: bool
) -> None:
    twilio_server.inject(Reply(status, {"code": code, "message": "no", "status": status}))
    with adapter(twilio_server) as twilio, pytest.raises(ProviderError) as caught:
        twilio.place_call(dial(AGENT))
    assert type(caught.value) is kind
    assert caught.value.code == code
    assert caught.value.retryable is retryable
    assert caught.value.placed is False


def test_cancelling_a_queued_call_cancels_it(twilio_server: FakeTwilio) -> None:
    with adapter(twilio_server) as twilio:
        sid = twilio.place_call(dial(AGENT)).external_call_id
        twilio.cancel_call(sid)
    assert twilio_server.calls[sid]["status"] == "canceled"
    assert twilio_server.last.form() == {"Status": ["canceled"]}


def test_cancelling_an_answered_call_hangs_it_up(twilio_server: FakeTwilio) -> None:
    async def scenario() -> str:
        async with AsyncTwilioProvider(
            twilio_server.account_sid, twilio_server.auth_token, base_url=twilio_server.url
        ) as twilio:
            sid = (await twilio.place_call(dial(AGENT))).external_call_id
            twilio_server.calls[sid]["status"] = "in-progress"
            await twilio.cancel_call(sid)
            return sid

    sid = asyncio.run(scenario())
    assert [r.form().get("Status") for r in twilio_server.requests[1:]] == [
        ["canceled"],
        ["completed"],
    ]
    assert twilio_server.calls[sid]["status"] == "completed"


def test_fetch_reads_status_and_answered_by(twilio_server: FakeTwilio) -> None:
    with adapter(twilio_server) as twilio:
        sid = twilio.place_call(dial(AGENT)).external_call_id
        twilio_server.calls[sid].update(
            status="completed", answered_by="machine_start", duration="31"
        )
        event = twilio.fetch_call(attempt_id="att-0001", external_call_id=sid)
    assert event is not None
    assert event.outcome is CallOutcome.VOICEMAIL
    assert event.duration_seconds == 31
    assert event.raw_status == "completed"


# -- status callbacks ------------------------------------------------------------------------


def test_a_signed_status_callback_becomes_a_call_event(twilio_server: FakeTwilio) -> None:
    with adapter(twilio_server) as twilio:
        sid = twilio.place_call(dial(AGENT)).external_call_id
        webhook = twilio.webhook()
    at = datetime(2026, 3, 2, 15, 4, 5, tzinfo=timezone.utc)
    ringing = twilio_server.status_callback(sid, "ringing", at=at)
    done = twilio_server.status_callback(sid, "completed", answered_by="human", duration=42)
    now = datetime.now(timezone.utc)
    first, last = webhook.parse(ringing, now=now), webhook.parse(done, now=now)
    assert (first.status, first.outcome, first.sequence) == (CallStatus.RINGING, None, 0)
    assert first.occurred_at == at
    assert first.attempt_id == "att-0001"
    assert first.external_call_id == sid
    assert last.final
    assert (last.outcome, last.retryable, last.sequence) == (CallOutcome.ANSWERED, False, 1)
    assert last.duration_seconds == 42
    assert last.event_id == done.header("I-Twilio-Idempotency-Token")


def test_a_forged_or_unsigned_callback_is_refused(twilio_server: FakeTwilio) -> None:
    with adapter(twilio_server) as twilio:
        sid = twilio.place_call(dial(AGENT)).external_call_id
    good = twilio_server.status_callback(sid, "completed")
    webhook = TwilioWebhook(twilio_server.auth_token)
    now = datetime.now(timezone.utc)
    tampered = WebhookRequest(
        good.method, good.url, good.headers, good.body.replace(b"completed", b"busy")
    )
    unsigned = WebhookRequest(good.method, good.url, {"Content-Type": "x"}, good.body)
    other_key = TwilioWebhook("another-token")
    with pytest.raises(WebhookVerificationError, match="does not match"):
        webhook.parse(tampered, now=now)
    with pytest.raises(WebhookVerificationError, match="missing X-Twilio-Signature"):
        webhook.parse(unsigned, now=now)
    with pytest.raises(WebhookVerificationError):
        other_key.parse(good, now=now)


def test_a_callback_posted_over_http_to_the_app_still_verifies(twilio_server: FakeTwilio) -> None:
    with LoopbackServer() as app:
        with TwilioProvider(
            twilio_server.account_sid,
            twilio_server.auth_token,
            status_callback_url=f"{app.url}/webhooks/twilio",
            base_url=twilio_server.url,
        ) as twilio:
            sid = twilio.place_call(dial(AGENT)).external_call_id
        assert twilio_server.emit(twilio_server.status_callback(sid, "busy")).status_code == 200
    received = app.last
    request = WebhookRequest(
        received.method,
        f"{app.url}{received.path}?{urlencode(received.query, doseq=True)}",
        received.headers,
        received.body,
    )
    event = TwilioWebhook(twilio_server.auth_token).parse(request, now=datetime.now(timezone.utc))
    assert (event.outcome, event.attempt_id, event.external_call_id) == (
        CallOutcome.BUSY,
        "att-0001",
        sid,
    )


def test_a_url_with_a_broken_port_is_refused_not_crashed() -> None:
    request = _signed("https://app.example/cb", {"CallSid": "CA1", "CallStatus": "busy"})
    broken = WebhookRequest("POST", "https://app.example:x/cb", request.headers, request.body)
    with pytest.raises(WebhookVerificationError):
        TwilioWebhook("tok").verify(broken)


def _signed(url: str, params: dict[str, str], token: str = "tok", **kw: str) -> WebhookRequest:
    signature = RequestValidator(token).compute_signature(url, params, **kw)
    return WebhookRequest(
        "POST",
        url,
        {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"},
        urlencode(params).encode(),
    )


def test_the_url_is_accepted_with_and_without_its_default_port() -> None:
    params = {"CallSid": "CA1", "CallStatus": "busy"}
    webhook = TwilioWebhook("tok")
    signed_plain = _signed("https://app.example/cb?attempt_id=a", params)
    signed_port = _signed("https://app.example:443/cb?attempt_id=a", params)
    on_port = WebhookRequest(
        "POST", "https://app.example:443/cb?attempt_id=a", signed_plain.headers, signed_plain.body
    )
    on_plain = WebhookRequest(
        "POST", "https://app.example/cb?attempt_id=a", signed_port.headers, signed_port.body
    )
    webhook.verify(on_port)
    webhook.verify(on_plain)
    other_host = WebhookRequest(
        "POST", "https://evil.example/cb?attempt_id=a", signed_plain.headers, signed_plain.body
    )
    with pytest.raises(WebhookVerificationError):
        webhook.verify(other_host)


def test_a_json_body_is_covered_by_body_sha256() -> None:
    body = json.dumps({"CallSid": "CA9", "CallStatus": "no-answer"}).encode()
    url = f"https://app.example/cb?attempt_id=a&bodySHA256={hashlib.sha256(body).hexdigest()}"
    signature = RequestValidator("tok").compute_signature(url, {})
    request = WebhookRequest(
        "POST", url, {"X-Twilio-Signature": signature, "Content-Type": "application/json"}, body
    )
    event = TwilioWebhook("tok").parse(request, now=datetime.now(timezone.utc))
    assert (event.outcome, event.attempt_id) == (CallOutcome.NO_ANSWER, "a")
    assert RequestValidator("tok").validate(url, body.decode(), signature)
    changed = WebhookRequest("POST", url, request.headers, body.replace(b"no-answer", b"completed"))
    with pytest.raises(WebhookVerificationError, match="bodySHA256"):
        TwilioWebhook("tok").parse(changed, now=datetime.now(timezone.utc))


def test_a_shared_key_signature_with_hmac_sha256_is_accepted() -> None:
    url = "https://app.example/cb"
    request = _signed(url, {"CallSid": "CA1", "CallStatus": "failed"}, algorithm="HMAC_SHA256")
    headers = {
        **request.headers,
        "X-Twilio-Webhooks-Signature-Settings": "key=WK1,algorithm=HMAC_SHA256",
    }
    TwilioWebhook("tok").verify(WebhookRequest("POST", url, headers, request.body))
    with pytest.raises(WebhookVerificationError):  # the same signature read as SHA-1
        TwilioWebhook("tok").verify(request)


def test_a_callback_without_call_sid_or_status_is_a_payload_error() -> None:
    request = _signed("https://app.example/cb", {"CallSid": "CA1"})
    with pytest.raises(WebhookPayloadError, match="CallStatus"):
        TwilioWebhook("tok").parse(request, now=datetime.now(timezone.utc))
    bad_seq = _signed(
        "https://app.example/cb", {"CallSid": "CA1", "CallStatus": "busy", "SequenceNumber": "x"}
    )
    with pytest.raises(WebhookPayloadError, match="SequenceNumber"):
        TwilioWebhook("tok").parse(bad_seq, now=datetime.now(timezone.utc))


_TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=12)
_PARAMS = st.dictionaries(_TEXT.filter(bool), _TEXT, max_size=6)
_URLS = st.sampled_from(
    [
        "https://app.example/twilio/status?attempt_id=a1",
        "https://app.example:443/twilio/status",
        "http://app.example/cb",
        "http://app.example:8080/cb?x=1&y=%20z",
        "https://app.example/cb/",
    ]
)


@settings(max_examples=150, deadline=None)
@given(url=_URLS, params=_PARAMS)
def test_what_the_official_validator_signs_is_accepted(url: str, params: dict[str, str]) -> None:
    request = _signed(url, params)
    TwilioWebhook("tok").verify(request)  # does not raise
    assert RequestValidator("tok").validate(url, params, request.header("X-Twilio-Signature"))


@settings(max_examples=150, deadline=None)
@given(url=_URLS, params=_PARAMS, data=st.data())
def test_any_change_to_url_parameters_or_body_is_refused(
    url: str, params: dict[str, str], data: st.DataObject
) -> None:
    signed = _signed(url, params)
    changes = ["add", "path", "query", "token"] + (["value", "remove"] if params else [])
    change = data.draw(st.sampled_from(changes))
    changed_params, changed_url, token = dict(params), url, "tok"
    if change == "value":
        name = data.draw(st.sampled_from(sorted(params)))
        changed_params[name] = data.draw(_TEXT.filter(lambda v: v != params[name]))
    elif change == "remove":
        del changed_params[data.draw(st.sampled_from(sorted(params)))]
    elif change == "path":
        parts = urlsplit(url)
        changed_url = parts._replace(path=parts.path + "x").geturl()
    elif change == "query":
        changed_url = url + ("&" if "?" in url else "?") + "attempt_id=other"
    elif change == "token":
        token = "other-token"
    else:
        name = data.draw(_TEXT.filter(lambda n: n and n not in params))
        changed_params[name] = data.draw(_TEXT)
    request = WebhookRequest(
        "POST", changed_url, signed.headers, urlencode(changed_params).encode()
    )
    with pytest.raises(WebhookVerificationError):
        TwilioWebhook(token).verify(request)
    assert not RequestValidator(token).validate(
        changed_url, changed_params, signed.header("X-Twilio-Signature")
    )


# -- outcome table ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "answered_by", "sip", "outcome", "retryable"),
    [
        ("completed", None, None, CallOutcome.ANSWERED, False),
        ("completed", "human", None, CallOutcome.ANSWERED, False),
        ("completed", "unknown", None, CallOutcome.ANSWERED, False),
        ("completed", "machine_start", None, CallOutcome.VOICEMAIL, True),
        ("completed", "machine_end_beep", None, CallOutcome.VOICEMAIL, True),
        ("completed", "machine_end_silence", None, CallOutcome.VOICEMAIL, True),
        ("completed", "machine_end_other", None, CallOutcome.VOICEMAIL, True),
        ("completed", "fax", None, CallOutcome.INVALID_NUMBER, False),
        ("no-answer", None, None, CallOutcome.NO_ANSWER, True),
        ("busy", None, None, CallOutcome.BUSY, True),
        ("failed", None, 404, CallOutcome.INVALID_NUMBER, False),
        ("failed", None, 410, CallOutcome.INVALID_NUMBER, False),
        ("failed", None, 484, CallOutcome.INVALID_NUMBER, False),
        ("failed", None, 604, CallOutcome.INVALID_NUMBER, False),
        ("failed", None, 480, CallOutcome.NO_ANSWER, True),
        ("failed", None, 603, CallOutcome.DECLINED, False),
        ("failed", None, 500, CallOutcome.ERROR, True),
        ("failed", None, None, CallOutcome.ERROR, True),
        ("canceled", None, None, CallOutcome.ERROR, False),
        ("teleported", None, None, CallOutcome.ERROR, True),
    ],
)
def test_twilio_statuses_map_onto_outcomes(
    status: str, answered_by: str | None, sip: int | None, outcome: CallOutcome, retryable: bool
) -> None:
    mapped = twilio_outcome(status, answered_by, sip)
    assert mapped.status is CallStatus.ENDED
    assert (mapped.outcome, mapped.retryable) == (outcome, retryable)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("queued", CallStatus.QUEUED),
        ("initiated", CallStatus.QUEUED),
        ("ringing", CallStatus.RINGING),
        ("in-progress", CallStatus.IN_PROGRESS),
    ],
)
def test_twilio_progress_statuses_are_not_final(status: str, expected: CallStatus) -> None:
    mapped = twilio_outcome(status)
    assert (mapped.status, mapped.outcome) == (expected, None)


@settings(max_examples=300, deadline=None)
@given(url=st.text(alphabet=st.sampled_from("ab:/?#&=%. \t\n[]1@"), max_size=40) | _URLS)
def test_the_callback_query_is_read_as_urlsplit_reads_it(url: str) -> None:
    from outdial.providers.twilio import _query

    try:
        expected = urlsplit(url).query
    except ValueError:  # a URL urlsplit refuses: only a verifiable signature can pass it
        return
    assert _query(url) == expected

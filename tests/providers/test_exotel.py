"""Exotel: Calls/connect, call details, token-checked callbacks in every encoding."""

from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import parse_qs, urlsplit

import pytest

from outdial.campaign import AgentSettings
from outdial.errors import (
    ConfigurationError,
    ProviderRateLimited,
    ProviderRejected,
    WebhookPayloadError,
    WebhookVerificationError,
)
from outdial.outcomes import CallOutcome
from outdial.ports import CallStatus, WebhookRequest
from outdial.providers import ExotelProvider, ExotelWebhook, exotel_outcome

from .cases import dial
from .servers import FakeExotel, Reply

AGENT = AgentSettings(provider="exotel", external_agent_id="424242", phone_number="08047112233")
CALLBACK = "https://app.example/webhooks/exotel"


def adapter(server: FakeExotel) -> ExotelProvider:
    return ExotelProvider(
        server.account_sid,
        server.api_key,
        server.api_token,
        status_callback_url=CALLBACK,
        callback_token="cb-secret",
        base_url=server.url,
    )


def test_a_call_connects_the_recipient_to_the_flow_with_attempt_and_token(
    exotel_server: FakeExotel,
) -> None:
    with adapter(exotel_server) as exotel:
        placed = exotel.place_call(dial(AGENT, to="9876543210"))
    sent = exotel_server.last
    assert (sent.method, sent.path) == ("POST", "/v1/Accounts/exoacct1/Calls/connect.json")
    assert sent.basic_auth() == ("exo-key", "exo-token")
    form = sent.form()
    assert form["From"] == ["+919876543210"]  # the Indian national number gets +91
    assert form["CallerId"] == ["+918047112233"]
    assert form["Url"] == ["http://my.exotel.com/exoacct1/exoml/start_voice/424242"]
    assert form["CallType"] == ["trans"]
    assert form["CustomField"] == ["att-0001"]
    callback = urlsplit(form["StatusCallback"][0])
    assert parse_qs(callback.query) == {"attempt_id": ["att-0001"], "token": ["cb-secret"]}
    assert form["StatusCallbackEvents[0]"] == ["terminal"]
    assert form["StatusCallbackEvents[1]"] == ["answered"]
    assert placed.status is CallStatus.IN_PROGRESS


@pytest.mark.parametrize("written", ["9876543210", "09876543210", "919876543210", "+919876543210"])
def test_indian_numbers_are_dialled_with_the_country_code(
    exotel_server: FakeExotel, written: str
) -> None:
    with adapter(exotel_server) as exotel:
        exotel.place_call(dial(AGENT, to=written))
    assert exotel_server.last.form()["From"] == ["+919876543210"]


def test_an_attempt_id_too_long_for_custom_field_is_refused_before_sending(
    exotel_server: FakeExotel,
) -> None:
    with adapter(exotel_server) as exotel, pytest.raises(ProviderRejected) as caught:
        exotel.place_call(dial(AGENT, attempt_id="x" * 129))
    assert caught.value.placed is False
    assert exotel_server.requests == []


def test_exotels_rest_exception_gives_code_and_message(exotel_server: FakeExotel) -> None:
    exotel_server.inject(
        Reply(
            429,
            {"RestException": {"Status": 429, "Message": "Too many requests", "Code": 34099}},
            {"Retry-After": "60"},
        )
    )
    with adapter(exotel_server) as exotel, pytest.raises(ProviderRateLimited) as caught:
        exotel.place_call(dial(AGENT))
    assert (caught.value.code, caught.value.message) == (34099, "Too many requests")
    assert caught.value.retry_after is not None
    assert caught.value.retry_after.total_seconds() == 60


def test_a_callback_url_without_its_token_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="callback_token"):
        ExotelProvider("sid", "k", "t", status_callback_url=CALLBACK)


@pytest.mark.parametrize("content", ["json", "form", "multipart"])
def test_status_callbacks_in_any_encoding_become_events(
    exotel_server: FakeExotel, content: str
) -> None:
    with adapter(exotel_server) as exotel:
        sid = exotel.place_call(dial(AGENT)).external_call_id
        webhook = exotel.webhook()
    now = datetime.now(timezone.utc)
    answered = webhook.parse(
        exotel_server.status_callback(sid, "in-progress", event_type="answered", content=content),
        now=now,
    )
    done = webhook.parse(exotel_server.status_callback(sid, "completed", content=content), now=now)
    assert (answered.status, answered.outcome) == (CallStatus.IN_PROGRESS, None)
    assert (done.outcome, done.attempt_id, done.external_call_id) == (
        CallOutcome.ANSWERED,
        "att-0001",
        sid,
    )
    assert done.duration_seconds == 33
    assert done.occurred_at == datetime(2026, 3, 2, 15, 1, 5, tzinfo=timezone.utc)


def test_the_custom_field_names_the_attempt_when_the_url_does_not(
    exotel_server: FakeExotel,
) -> None:
    with adapter(exotel_server) as exotel:
        sid = exotel.place_call(dial(AGENT)).external_call_id
    request = exotel_server.status_callback(sid, "busy", url=f"{CALLBACK}?token=cb-secret")
    event = ExotelWebhook("cb-secret").parse(request, now=datetime.now(timezone.utc))
    assert (event.attempt_id, event.outcome) == ("att-0001", CallOutcome.BUSY)


def test_a_callback_without_the_right_token_is_refused(exotel_server: FakeExotel) -> None:
    with adapter(exotel_server) as exotel:
        sid = exotel.place_call(dial(AGENT)).external_call_id
    good = exotel_server.status_callback(sid, "completed")
    now = datetime.now(timezone.utc)
    with pytest.raises(WebhookVerificationError, match="wrong token"):
        ExotelWebhook("another").parse(good, now=now)
    no_token = WebhookRequest("POST", CALLBACK, good.headers, good.body)
    with pytest.raises(WebhookVerificationError, match="no token"):
        ExotelWebhook("cb-secret").parse(no_token, now=now)


def test_a_malformed_callback_is_a_payload_error() -> None:
    url = f"{CALLBACK}?token=t"
    webhook = ExotelWebhook("t")
    now = datetime.now(timezone.utc)
    for headers, body in [
        ({"Content-Type": "application/json"}, b"[1, 2]"),
        ({"Content-Type": "application/json"}, b'{"CallSid": "x"}'),
        (
            {"Content-Type": "application/x-www-form-urlencoded"},
            b"CallSid=x&Status=busy&DateUpdated=yesterday",
        ),
        ({"Content-Type": "application/x-www-form-urlencoded"}, b"\xff\xfe"),
    ]:
        with pytest.raises(WebhookPayloadError):
            webhook.parse(WebhookRequest("POST", url, headers, body), now=now)


@pytest.mark.parametrize(
    ("status", "outcome", "retryable"),
    [
        ("completed", CallOutcome.ANSWERED, False),
        ("busy", CallOutcome.BUSY, True),
        ("no-answer", CallOutcome.NO_ANSWER, True),
        ("failed", CallOutcome.ERROR, True),
        ("vanished", CallOutcome.ERROR, True),
    ],
)
def test_exotel_statuses_map_onto_outcomes(
    status: str, outcome: CallOutcome, retryable: bool
) -> None:
    mapped = exotel_outcome(status)
    assert (mapped.status, mapped.outcome, mapped.retryable) == (
        CallStatus.ENDED,
        outcome,
        retryable,
    )

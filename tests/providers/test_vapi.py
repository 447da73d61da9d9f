"""Vapi: POST /call, live-call control, server messages with every credential
type, and the endedReason families."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from datetime import datetime, timedelta, timezone

import pytest
import structlog

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
from outdial.providers import AsyncVapiProvider, VapiHmac, VapiProvider, VapiWebhook, vapi_outcome

from .cases import dial
from .servers import FakeVapi

AGENT = AgentSettings(
    provider="vapi", external_agent_id="asst-1", phone_number_id="pn-1", options={}
)


def adapter(server: FakeVapi) -> VapiProvider:
    return VapiProvider(server.api_key, base_url=server.url)


def test_a_call_names_assistant_number_customer_variables_and_attempt(
    vapi_server: FakeVapi,
) -> None:
    with adapter(vapi_server) as vapi:
        placed = vapi.place_call(dial(AGENT, greeting="Hi Ann!"))
    sent = vapi_server.last
    assert (sent.method, sent.path) == ("POST", "/call")
    assert sent.headers["authorization"] == f"Bearer {vapi_server.api_key}"
    assert sent.headers["content-type"] == "application/json"
    assert sent.json() == {
        "assistantId": "asst-1",
        "phoneNumberId": "pn-1",
        "customer": {"number": "+12125554567"},
        "name": "att-0001",
        "assistantOverrides": {
            "variableValues": {"first_name": "Ann", "balance": "12.50"},
            "metadata": {
                "attempt_id": "att-0001",
                "campaign_id": "camp-1",
                "recipient_id": "rcp-1",
            },
            "firstMessage": "Hi Ann!",
        },
    }
    assert placed.status is CallStatus.QUEUED


def test_a_long_attempt_id_stays_in_metadata_only(vapi_server: FakeVapi) -> None:
    with adapter(vapi_server) as vapi:
        vapi.place_call(dial(AGENT, attempt_id="a" * 41))
    body = vapi_server.last.json()
    assert "name" not in body
    assert body["assistantOverrides"]["metadata"]["attempt_id"] == "a" * 41


def test_an_agent_without_assistant_or_number_id_is_refused_before_any_request(
    vapi_server: FakeVapi,
) -> None:
    with adapter(vapi_server) as vapi, pytest.raises(ProviderRejected) as caught:
        vapi.place_call(dial(AgentSettings(provider="vapi", external_agent_id="asst-1")))
    assert caught.value.placed is False
    assert vapi_server.requests == []


def test_the_org_concurrency_limit_is_rate_limiting_not_rejection(vapi_server: FakeVapi) -> None:
    vapi_server.concurrency_limit = 1
    with adapter(vapi_server) as vapi:
        vapi.place_call(dial(AGENT))
        with pytest.raises(ProviderRateLimited) as caught:
            vapi.place_call(dial(AGENT, attempt_id="att-0002"))
    assert caught.value.retryable is True
    assert caught.value.placed is False
    assert "Concurrency" in caught.value.message


def test_a_validation_error_is_rejected_with_vapis_messages(vapi_server: FakeVapi) -> None:
    with adapter(vapi_server) as vapi, pytest.raises(ProviderRejected) as caught:
        vapi.place_call(dial(AGENT, to="555"))
    assert "customer.number" in caught.value.message
    assert caught.value.placed is False


def test_cancel_ends_a_live_call_through_its_control_url(vapi_server: FakeVapi) -> None:
    async def scenario() -> str:
        async with AsyncVapiProvider(vapi_server.api_key, base_url=vapi_server.url) as vapi:
            call_id = (await vapi.place_call(dial(AGENT))).external_call_id
            await vapi.cancel_call(call_id)
            await vapi.cancel_call(call_id)  # already ended: nothing more to send
            return call_id

    call_id = asyncio.run(scenario())
    assert vapi_server.calls[call_id]["status"] == "ended"
    paths = [r.path for r in vapi_server.requests]
    assert paths == ["/call", f"/call/{call_id}", f"/control/{call_id}", f"/call/{call_id}"]


def test_fetch_maps_the_ended_reason(vapi_server: FakeVapi) -> None:
    with adapter(vapi_server) as vapi:
        call_id = vapi.place_call(dial(AGENT)).external_call_id
        vapi_server.calls[call_id].update(status="ended", endedReason="customer-busy")
        event = vapi.fetch_call(attempt_id="att-0001", external_call_id=call_id)
    assert event is not None
    assert (event.outcome, event.raw_status) == (CallOutcome.BUSY, "customer-busy")


# -- server messages ------------------------------------------------------------------------


def _placed(server: FakeVapi) -> str:
    with adapter(server) as vapi:
        return vapi.place_call(dial(AGENT)).external_call_id


def test_an_hmac_signed_end_of_call_report_becomes_a_final_event(vapi_server: FakeVapi) -> None:
    call_id = _placed(vapi_server)
    now = datetime.now(timezone.utc)
    request = vapi_server.server_message(
        call_id, "end-of-call-report", ended_reason="customer-ended-call", at=now
    )
    event = VapiWebhook(hmac=vapi_server.hmac_secret).parse(request, now=now)
    assert event.final
    assert (event.outcome, event.retryable) == (CallOutcome.ANSWERED, False)
    assert event.attempt_id == "att-0001"
    assert event.external_call_id == call_id
    assert event.duration_seconds == 90.5
    assert event.raw_status == "customer-ended-call"


def test_status_updates_report_progress(vapi_server: FakeVapi) -> None:
    call_id = _placed(vapi_server)
    now = datetime.now(timezone.utc)
    webhook = VapiWebhook(hmac=vapi_server.hmac_secret)
    ringing = webhook.parse(
        vapi_server.server_message(call_id, "status-update", status="ringing"), now=now
    )
    ended = webhook.parse(
        vapi_server.server_message(
            call_id, "status-update", status="ended", ended_reason="customer-did-not-answer"
        ),
        now=now,
    )
    other = webhook.parse(vapi_server.server_message(call_id, "transcript"), now=now)
    assert (ringing.status, ringing.outcome) == (CallStatus.RINGING, None)
    assert (ended.outcome, ended.retryable) == (CallOutcome.NO_ANSWER, True)
    assert (other.status, other.outcome, other.raw_status) == (
        CallStatus.IN_PROGRESS,
        None,
        "transcript",
    )


def test_bearer_and_legacy_secret_credentials_are_accepted(vapi_server: FakeVapi) -> None:
    call_id = _placed(vapi_server)
    now = datetime.now(timezone.utc)
    token = vapi_server.hmac_secret
    bearer = vapi_server.server_message(call_id, "status-update", status="ringing", sign="bearer")
    legacy = vapi_server.server_message(call_id, "status-update", status="ringing", sign="secret")
    assert VapiWebhook(bearer=token).parse(bearer, now=now).status is CallStatus.RINGING
    assert VapiWebhook(secret=token).parse(legacy, now=now).status is CallStatus.RINGING
    with pytest.raises(WebhookVerificationError, match="wrong bearer token"):
        VapiWebhook(bearer="other").parse(bearer, now=now)
    with pytest.raises(WebhookVerificationError, match="no x-vapi-secret"):
        VapiWebhook(secret=token).parse(bearer, now=now)
    # during a rotation both credentials may be configured: either one passes
    assert VapiWebhook(bearer="old", secret=token).parse(legacy, now=now).final is False


def test_a_forged_stale_or_replayed_hmac_message_is_refused(vapi_server: FakeVapi) -> None:
    call_id = _placed(vapi_server)
    now = datetime.now(timezone.utc)
    webhook = VapiWebhook(hmac=vapi_server.hmac_secret)
    good = vapi_server.server_message(
        call_id, "end-of-call-report", ended_reason="voicemail", at=now
    )
    forged = WebhookRequest(
        "POST", good.url, good.headers, good.body.replace(b"voicemail", b"customer-busy")
    )
    with pytest.raises(WebhookVerificationError, match="does not match"):
        webhook.parse(forged, now=now)
    with pytest.raises(WebhookVerificationError, match="stale or replayed"):
        webhook.parse(good, now=now + timedelta(minutes=6))
    unsigned = WebhookRequest("POST", good.url, {"Content-Type": "application/json"}, good.body)
    with pytest.raises(WebhookVerificationError, match="no x-signature"):
        webhook.parse(unsigned, now=now)


def test_the_hmac_plan_is_configurable() -> None:
    body = b'{"message": {"type": "status-update", "status": "queued", "call": {"id": "c1"}}}'
    secret = base64.b64encode(b"raw-secret").decode()
    digest = hmac.new(b"raw-secret", b"POST|https://app.example/v|" + body, hashlib.sha512).digest()
    request = WebhookRequest(
        "POST",
        "https://app.example/v",
        {"x-vapi-signature": "sha512=" + base64.b64encode(digest).decode()},
        body,
    )
    plan = VapiHmac(
        secret,
        algorithm="sha512",
        signature_header="x-vapi-signature",
        payload_format="{method}|{url}|{body}",
        signature_prefix="sha512=",
        encoding="base64",
        secret_is_base64=True,
    )
    event = VapiWebhook(hmac=plan).parse(request, now=datetime.now(timezone.utc))
    assert (event.status, event.external_call_id) == (CallStatus.QUEUED, "c1")


def test_a_body_containing_placeholders_is_signed_as_it_is() -> None:
    body = b'{"message": {"type": "tool-calls", "note": "{timestamp}.{body}"}}'
    stamp = "1772463600"
    digest = hmac.new(b"k", stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    request = WebhookRequest(
        "POST", "https://a", {"x-signature": digest, "x-timestamp": stamp}, body
    )
    now = datetime.fromtimestamp(1772463600, timezone.utc)
    assert VapiWebhook(hmac="k").parse(request, now=now).raw_status == "tool-calls"


def test_a_webhook_needs_a_credential_and_a_message() -> None:
    with pytest.raises(ConfigurationError):
        VapiWebhook()
    with pytest.raises(ConfigurationError):
        VapiHmac("k", algorithm="md5")
    request = WebhookRequest("POST", "https://a", {"x-vapi-secret": "s"}, b'{"nothing": 1}')
    with pytest.raises(WebhookPayloadError, match="no message"):
        VapiWebhook(secret="s").parse(request, now=datetime.now(timezone.utc))
    broken = WebhookRequest("POST", "https://a", {"x-vapi-secret": "s"}, b"{not json")
    with pytest.raises(WebhookPayloadError, match="not valid JSON"):
        VapiWebhook(secret="s").parse(broken, now=datetime.now(timezone.utc))


# -- endedReason families ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "outcome", "retryable"),
    [
        ("customer-ended-call", CallOutcome.ANSWERED, False),
        ("assistant-ended-call", CallOutcome.ANSWERED, False),
        ("assistant-ended-call-after-message-spoken", CallOutcome.ANSWERED, False),
        ("assistant-ended-call-with-hangup-task", CallOutcome.ANSWERED, False),
        ("assistant-said-end-call-phrase", CallOutcome.ANSWERED, False),
        ("assistant-forwarded-call", CallOutcome.ANSWERED, False),
        ("exceeded-max-duration", CallOutcome.ANSWERED, False),
        ("silence-timed-out", CallOutcome.ANSWERED, False),
        ("voicemail", CallOutcome.VOICEMAIL, True),
        ("customer-did-not-answer", CallOutcome.NO_ANSWER, True),
        (
            "call.in-progress.error-providerfault-outbound-sip-480-temporarily-unavailable",
            CallOutcome.NO_ANSWER,
            True,
        ),
        (
            "call.in-progress.error-providerfault-outbound-sip-408-request-timeout",
            CallOutcome.NO_ANSWER,
            True,
        ),
        ("customer-busy", CallOutcome.BUSY, True),
        ("twilio-reported-customer-misdialed", CallOutcome.INVALID_NUMBER, False),
        ("call.in-progress.error-sip-outbound-call-failed-to-connect", CallOutcome.ERROR, True),
        ("twilio-failed-to-connect-call", CallOutcome.ERROR, True),
        (
            "call.in-progress.error-providerfault-outbound-sip-503-service-unavailable",
            CallOutcome.ERROR,
            True,
        ),
        ("call.in-progress.error-providerfault-openai-llm-failed", CallOutcome.ERROR, True),
        ("worker-shutdown", CallOutcome.ERROR, True),
        ("phone-call-provider-closed-websocket", CallOutcome.ERROR, True),
        ("call.start.error-vapi-number-outbound-daily-limit", CallOutcome.ERROR, False),
        ("call.start.error-get-org", CallOutcome.ERROR, False),
        ("call.ringing.error-concurrency-limit-reached", CallOutcome.ERROR, True),
        ("call.start.error-subscription-concurrency-limit-reached", CallOutcome.ERROR, True),
        ("manually-canceled", CallOutcome.ERROR, False),
        ("call-deleted", CallOutcome.ERROR, False),
        ("scheduled-call-deleted", CallOutcome.ERROR, False),
    ],
)
def test_ended_reasons_map_by_family(reason: str, outcome: CallOutcome, retryable: bool) -> None:
    mapped = vapi_outcome(reason)
    assert (mapped.status, mapped.outcome, mapped.retryable) == (
        CallStatus.ENDED,
        outcome,
        retryable,
    )


def test_an_unknown_ended_reason_is_a_retryable_error_logged_once() -> None:
    with structlog.testing.capture_logs() as logs:
        first = vapi_outcome("a-reason-vapi-adds-next-year")
        second = vapi_outcome("a-reason-vapi-adds-next-year")
    assert first == second
    assert (first.outcome, first.retryable) == (CallOutcome.ERROR, True)
    assert [entry["value"] for entry in logs] == ["a-reason-vapi-adds-next-year"]
    assert logs[0]["provider"] == "vapi"


def test_the_raw_ended_reason_is_kept_on_the_event() -> None:
    body = json.dumps(
        {
            "message": {
                "type": "end-of-call-report",
                "endedReason": "pipeline-error-new-thing",
                "call": {"id": "c2"},
            }
        }
    ).encode()
    request = WebhookRequest("POST", "https://a", {"x-vapi-secret": "s"}, body)
    event = VapiWebhook(secret="s").parse(request, now=datetime.now(timezone.utc))
    assert (event.outcome, event.retryable, event.raw_status) == (
        CallOutcome.ERROR,
        True,
        "pipeline-error-new-thing",
    )
    assert event.error == "pipeline-error-new-thing"

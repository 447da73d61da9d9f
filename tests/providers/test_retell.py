"""Retell: create-phone-call, get-call, x-retell-signature and disconnection reasons."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from outdial.campaign import AgentSettings
from outdial.errors import ProviderRejected, WebhookPayloadError, WebhookVerificationError
from outdial.outcomes import CallOutcome
from outdial.ports import CallStatus, WebhookRequest
from outdial.providers import AsyncRetellProvider, RetellProvider, RetellWebhook, retell_outcome

from .cases import dial
from .servers import FakeRetell

AGENT = AgentSettings(provider="retell", external_agent_id="agent_9", phone_number="+12125550100")


def adapter(server: FakeRetell) -> RetellProvider:
    return RetellProvider(server.api_key, base_url=server.url)


def test_a_call_carries_numbers_agent_dynamic_variables_and_attempt_metadata(
    retell_server: FakeRetell,
) -> None:
    with adapter(retell_server) as retell:
        placed = retell.place_call(dial(AGENT))
    sent = retell_server.last
    assert (sent.method, sent.path) == ("POST", "/v2/create-phone-call")
    assert sent.headers["authorization"] == "Bearer key_retell"
    assert sent.json() == {
        "from_number": "+12125550100",
        "to_number": "+12125554567",
        "override_agent_id": "agent_9",
        "retell_llm_dynamic_variables": {"first_name": "Ann", "balance": "12.50"},
        "metadata": {"attempt_id": "att-0001", "campaign_id": "camp-1", "recipient_id": "rcp-1"},
    }
    assert placed.external_call_id.startswith("call_")
    assert placed.status is CallStatus.QUEUED


def test_without_an_agent_override_the_numbers_own_agent_answers(retell_server: FakeRetell) -> None:
    agent = AgentSettings(provider="retell", phone_number="+12125550100")
    with adapter(retell_server) as retell:
        retell.place_call(dial(agent))
    assert "override_agent_id" not in retell_server.last.json()


def test_a_bad_number_is_rejected_with_retells_message(retell_server: FakeRetell) -> None:
    with adapter(retell_server) as retell, pytest.raises(ProviderRejected) as caught:
        retell.place_call(dial(AGENT, to="12345"))
    assert "to_number" in caught.value.message
    assert caught.value.placed is False


def test_cancelling_is_not_offered_and_says_so(retell_server: FakeRetell) -> None:
    async def scenario() -> None:
        async with AsyncRetellProvider(retell_server.api_key, base_url=retell_server.url) as r:
            await r.cancel_call("call_1")

    with pytest.raises(ProviderRejected) as caught:
        asyncio.run(scenario())
    assert caught.value.code == "unsupported"
    assert retell_server.requests == []


def test_fetch_reads_the_call_and_its_metadata(retell_server: FakeRetell) -> None:
    with adapter(retell_server) as retell:
        call_id = retell.place_call(dial(AGENT)).external_call_id
        retell_server.webhook(call_id, "call_ended", disconnection_reason="dial_busy")
        event = retell.fetch_call(attempt_id="att-0001", external_call_id=call_id)
    assert event is not None
    assert (event.outcome, event.raw_status, event.duration_seconds) == (
        CallOutcome.BUSY,
        "dial_busy",
        61.0,
    )


def test_signed_webhooks_become_events(retell_server: FakeRetell) -> None:
    with adapter(retell_server) as retell:
        call_id = retell.place_call(dial(AGENT)).external_call_id
        webhook = retell.webhook()
    now = datetime.now(timezone.utc)
    started = webhook.parse(retell_server.webhook(call_id, "call_started", at=now), now=now)
    ended = webhook.parse(
        retell_server.webhook(call_id, "call_ended", disconnection_reason="user_hangup", at=now),
        now=now,
    )
    analyzed = webhook.parse(
        retell_server.webhook(
            call_id, "call_analyzed", disconnection_reason="agent_hangup", in_voicemail=True, at=now
        ),
        now=now,
    )
    assert (started.status, started.outcome, started.attempt_id) == (
        CallStatus.IN_PROGRESS,
        None,
        "att-0001",
    )
    assert (ended.outcome, ended.attempt_id, ended.external_call_id) == (
        CallOutcome.ANSWERED,
        "att-0001",
        call_id,
    )
    assert ended.duration_seconds == 61.0
    assert analyzed.outcome is CallOutcome.VOICEMAIL
    assert {started.event_id, ended.event_id, analyzed.event_id} == {
        f"{call_id}:call_started",
        f"{call_id}:call_ended",
        f"{call_id}:call_analyzed",
    }


def test_a_forged_stale_or_malformed_signature_is_refused(retell_server: FakeRetell) -> None:
    with adapter(retell_server) as retell:
        call_id = retell.place_call(dial(AGENT)).external_call_id
    now = datetime.now(timezone.utc)
    good = retell_server.webhook(call_id, "call_ended", disconnection_reason="dial_busy", at=now)
    webhook = RetellWebhook(retell_server.api_key)
    forged = WebhookRequest(
        "POST", good.url, good.headers, good.body.replace(b"dial_busy", b"user_hangup")
    )
    with pytest.raises(WebhookVerificationError, match="does not match"):
        webhook.parse(forged, now=now)
    with pytest.raises(WebhookVerificationError, match="stale or replayed"):
        webhook.parse(good, now=now + timedelta(minutes=5, seconds=1))
    assert webhook.parse(good, now=now + timedelta(minutes=4, seconds=59)).final
    for header in ("v=abc,d=00", "d=00", "garbage", ""):
        broken = WebhookRequest("POST", good.url, {"x-retell-signature": header}, good.body)
        with pytest.raises(WebhookVerificationError):
            webhook.parse(broken, now=now)
    with pytest.raises(WebhookVerificationError):
        RetellWebhook("another-key").parse(good, now=now)


def test_a_body_without_a_call_is_a_payload_error() -> None:
    import hashlib
    import hmac

    body = b'{"event": "call_ended"}'
    ms = "1772463600000"
    digest = hmac.new(b"k", body + ms.encode(), hashlib.sha256).hexdigest()
    request = WebhookRequest(
        "POST", "https://a", {"x-retell-signature": f"v={ms},d={digest}"}, body
    )
    with pytest.raises(WebhookPayloadError, match="call object"):
        RetellWebhook("k").parse(request, now=datetime.fromtimestamp(1772463600, timezone.utc))


@pytest.mark.parametrize(
    ("reason", "outcome", "retryable"),
    [
        ("user_hangup", CallOutcome.ANSWERED, False),
        ("agent_hangup", CallOutcome.ANSWERED, False),
        ("call_transfer", CallOutcome.ANSWERED, False),
        ("inactivity", CallOutcome.ANSWERED, False),
        ("max_duration_reached", CallOutcome.ANSWERED, False),
        ("voicemail_reached", CallOutcome.VOICEMAIL, True),
        ("dial_no_answer", CallOutcome.NO_ANSWER, True),
        ("dial_busy", CallOutcome.BUSY, True),
        ("invalid_destination", CallOutcome.INVALID_NUMBER, False),
        ("user_declined", CallOutcome.DECLINED, False),
        ("dial_failed", CallOutcome.ERROR, True),
        ("error_llm_websocket_open", CallOutcome.ERROR, True),
        ("error_retell", CallOutcome.ERROR, True),
        ("concurrency_limit_reached", CallOutcome.ERROR, True),
        ("marked_as_spam", CallOutcome.ERROR, False),
        ("no_valid_payment", CallOutcome.ERROR, False),
        ("telephony_provider_permission_denied", CallOutcome.ERROR, False),
        ("some_future_reason", CallOutcome.ERROR, True),
    ],
)
def test_disconnection_reasons_map_onto_outcomes(
    reason: str, outcome: CallOutcome, retryable: bool
) -> None:
    mapped = retell_outcome(reason)
    assert (mapped.status, mapped.outcome, mapped.retryable) == (
        CallStatus.ENDED,
        outcome,
        retryable,
    )


def test_voicemail_analysis_turns_an_answered_call_into_voicemail_only() -> None:
    assert retell_outcome("user_hangup", in_voicemail=True).outcome is CallOutcome.VOICEMAIL
    assert retell_outcome("dial_busy", in_voicemail=True).outcome is CallOutcome.BUSY

"""ElevenLabs: outbound-call, conversations, ElevenLabs-Signature and outcomes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from outdial.campaign import AgentSettings
from outdial.errors import ProviderRejected, ProviderUnavailable, WebhookVerificationError
from outdial.outcomes import CallOutcome
from outdial.ports import CallStatus, WebhookRequest
from outdial.providers import ElevenLabsProvider, ElevenLabsWebhook, elevenlabs_outcome

from .cases import dial
from .servers import FakeElevenLabs, Reply

AGENT = AgentSettings(
    provider="elevenlabs", external_agent_id="agent_11", phone_number_id="phnum_1"
)


def adapter(server: FakeElevenLabs) -> ElevenLabsProvider:
    return ElevenLabsProvider(server.api_key, base_url=server.url)


def test_a_call_carries_agent_number_and_dynamic_variables_with_the_attempt(
    elevenlabs_server: FakeElevenLabs,
) -> None:
    with adapter(elevenlabs_server) as eleven:
        placed = eleven.place_call(dial(AGENT, greeting="Hello Ann", prompt="Be brief."))
    sent = elevenlabs_server.last
    assert (sent.method, sent.path) == ("POST", "/v1/convai/twilio/outbound-call")
    assert sent.headers["xi-api-key"] == "xi-key"
    assert sent.json() == {
        "agent_id": "agent_11",
        "agent_phone_number_id": "phnum_1",
        "to_number": "+12125554567",
        "conversation_initiation_client_data": {
            "dynamic_variables": {
                "first_name": "Ann",
                "balance": "12.50",
                "attempt_id": "att-0001",
            },
            "conversation_config_override": {
                "agent": {"first_message": "Hello Ann", "prompt": {"prompt": "Be brief."}}
            },
        },
    }
    assert placed.external_call_id.startswith("conv_")


def test_a_sip_trunk_agent_uses_the_sip_trunk_route(elevenlabs_server: FakeElevenLabs) -> None:
    agent = AgentSettings(
        provider="elevenlabs",
        external_agent_id="agent_11",
        phone_number_id="phnum_1",
        options={"transport": "sip_trunk"},
    )
    with adapter(elevenlabs_server) as eleven:
        eleven.place_call(dial(agent))
    assert elevenlabs_server.last.path == "/v1/convai/sip-trunk/outbound-call"


def test_success_false_is_a_failure_to_place(elevenlabs_server: FakeElevenLabs) -> None:
    elevenlabs_server.inject(
        Reply(200, {"success": False, "message": "Twilio refused +12125554567"})
    )
    with adapter(elevenlabs_server) as eleven, pytest.raises(ProviderUnavailable) as caught:
        eleven.place_call(dial(AGENT))
    assert caught.value.placed is False
    assert "+12125554567" not in caught.value.message


def test_a_missing_field_is_rejected_with_the_validation_detail(
    elevenlabs_server: FakeElevenLabs,
) -> None:
    elevenlabs_server.inject(
        Reply(422, {"detail": [{"loc": ["body", "to_number"], "msg": "Field required"}]})
    )
    with adapter(elevenlabs_server) as eleven, pytest.raises(ProviderRejected) as caught:
        eleven.place_call(dial(AGENT))
    assert "to_number" in caught.value.message


def test_fetch_reads_the_conversation(elevenlabs_server: FakeElevenLabs) -> None:
    with adapter(elevenlabs_server) as eleven:
        conversation = eleven.place_call(dial(AGENT)).external_call_id
        elevenlabs_server.conversations[conversation].update(
            status="done", metadata={"call_duration_secs": 17}
        )
        event = eleven.fetch_call(attempt_id="ignored", external_call_id=conversation)
    assert event is not None
    assert (event.outcome, event.attempt_id, event.duration_seconds) == (
        CallOutcome.ANSWERED,
        "att-0001",
        17,
    )


def test_signed_post_call_webhooks_become_final_events(elevenlabs_server: FakeElevenLabs) -> None:
    with adapter(elevenlabs_server) as eleven:
        conversation = eleven.place_call(dial(AGENT)).external_call_id
        webhook = eleven.webhook(secret=elevenlabs_server.webhook_secret)
    now = datetime.now(timezone.utc)
    done = webhook.parse(
        elevenlabs_server.webhook(conversation, "post_call_transcription"), now=now
    )
    busy = webhook.parse(
        elevenlabs_server.webhook(conversation, "call_initiation_failure", failure_reason="busy"),
        now=now,
    )
    audio = webhook.parse(elevenlabs_server.webhook(conversation, "post_call_audio"), now=now)
    assert (done.outcome, done.attempt_id, done.duration_seconds) == (
        CallOutcome.ANSWERED,
        "att-0001",
        42,
    )
    assert (busy.outcome, busy.retryable, busy.attempt_id) == (CallOutcome.BUSY, True, "att-0001")
    assert (audio.status, audio.outcome) == (CallStatus.IN_PROGRESS, None)


def test_a_forged_or_stale_signature_is_refused(elevenlabs_server: FakeElevenLabs) -> None:
    with adapter(elevenlabs_server) as eleven:
        conversation = eleven.place_call(dial(AGENT)).external_call_id
    webhook = ElevenLabsWebhook(elevenlabs_server.webhook_secret)
    now = datetime.now(timezone.utc)
    stale = elevenlabs_server.webhook(
        conversation, "post_call_transcription", signed_at=now - timedelta(minutes=31)
    )
    fresh_enough = elevenlabs_server.webhook(
        conversation, "post_call_transcription", signed_at=now - timedelta(minutes=29)
    )
    with pytest.raises(WebhookVerificationError, match="stale or replayed"):
        webhook.parse(stale, now=now)
    assert webhook.parse(fresh_enough, now=now).final
    forged = WebhookRequest(
        "POST", stale.url, fresh_enough.headers, fresh_enough.body.replace(b"done", b"failed")
    )
    with pytest.raises(WebhookVerificationError, match="does not match"):
        webhook.parse(forged, now=now)
    missing = WebhookRequest("POST", stale.url, {}, fresh_enough.body)
    with pytest.raises(WebhookVerificationError, match="missing"):
        webhook.parse(missing, now=now)


@pytest.mark.parametrize(
    ("kwargs", "outcome", "retryable"),
    [
        ({"status": "done"}, CallOutcome.ANSWERED, False),
        ({"status": "failed"}, CallOutcome.ERROR, True),
        ({"failure_reason": "busy"}, CallOutcome.BUSY, True),
        ({"failure_reason": "no-answer"}, CallOutcome.NO_ANSWER, True),
        ({"failure_reason": "unknown"}, CallOutcome.ERROR, True),
        ({"failure_reason": "carrier-exploded"}, CallOutcome.ERROR, True),
    ],
)
def test_elevenlabs_results_map_onto_outcomes(
    kwargs: dict[str, str], outcome: CallOutcome, retryable: bool
) -> None:
    mapped = elevenlabs_outcome(**kwargs)
    assert (mapped.status, mapped.outcome, mapped.retryable) == (
        CallStatus.ENDED,
        outcome,
        retryable,
    )


@pytest.mark.parametrize("status", ["initiated", "in-progress", "processing"])
def test_unfinished_conversations_are_not_final(status: str) -> None:
    assert elevenlabs_outcome(status=status).outcome is None

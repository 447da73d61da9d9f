"""FakeProvider: a scripted provider that records what it was asked."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from outdial.campaign import AgentSettings
from outdial.errors import (
    ConfigurationError,
    NotFound,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)
from outdial.outcomes import CallOutcome
from outdial.ports import CallEvent, CallStatus, DialRequest, EventSource
from outdial.simulation import VirtualClock
from outdial.testing.fake_provider import AsyncFakeProvider, FakeProvider, UnknownFate

START = datetime(2026, 3, 2, 14, 0, tzinfo=timezone.utc)
ALICE = "+14155550100"
BOB = "+14155550101"


def dial(attempt_id: str, to: str = ALICE, attempt: int = 1) -> DialRequest:
    return DialRequest(
        attempt_id=attempt_id,
        campaign_id="camp",
        workspace_id="ws",
        recipient_id=f"rec-{to}",
        to=to,
        agent=AgentSettings(provider="fake"),
        attempt_number=attempt,
    )


# -- scripting ---------------------------------------------------------------------------------


def test_successive_calls_to_a_number_follow_its_script() -> None:
    fake = FakeProvider().script(ALICE, CallOutcome.BUSY, CallOutcome.VOICEMAIL)
    fake.place_call(dial("a1"))
    fake.place_call(dial("a2", attempt=2))
    fake.place_call(dial("a3", attempt=3))
    first, second, third = fake.complete()
    assert first.outcome is CallOutcome.BUSY
    assert second.outcome is CallOutcome.VOICEMAIL
    assert third.outcome is CallOutcome.ANSWERED  # the script ran out: the default


def test_unscripted_numbers_get_the_default_outcome() -> None:
    fake = FakeProvider(default_outcome=CallOutcome.NO_ANSWER)
    fake.place_call(dial("a1", to=BOB))
    (event,) = fake.complete()
    assert event.outcome is CallOutcome.NO_ANSWER
    fake.default_outcome = CallOutcome.DECLINED
    fake.place_call(dial("a2", to=BOB))
    assert fake.complete("a2")[0].outcome is CallOutcome.DECLINED


def test_a_scripted_error_is_raised_and_no_call_exists() -> None:
    refusal = ProviderRejected("number not in service", provider="fake", code="21217")
    fake = FakeProvider().script(ALICE, refusal, CallOutcome.ANSWERED)
    with pytest.raises(ProviderRejected) as info:
        fake.place_call(dial("a1"))
    assert info.value is refusal
    assert "a1" not in fake.placed
    assert fake.fetch_call(attempt_id="a1", external_call_id=None) is None
    placed = fake.place_call(dial("a2", attempt=2))
    assert fake.placed == {"a2": placed}
    assert [r.attempt_id for r in fake.calls] == ["a1", "a2"]


def test_scripts_are_per_number() -> None:
    fake = FakeProvider()
    fake.script(ALICE, ProviderRateLimited("slow down", retry_after=timedelta(seconds=5)))
    fake.script(BOB, CallOutcome.BUSY)
    fake.place_call(dial("b1", to=BOB))
    with pytest.raises(ProviderRateLimited) as info:
        fake.place_call(dial("a1", to=ALICE))
    assert info.value.retry_after == timedelta(seconds=5)
    assert fake.complete("b1")[0].outcome is CallOutcome.BUSY


def test_script_refuses_steps_it_does_not_understand() -> None:
    with pytest.raises(TypeError, match=r"script step 1 for \+14155550100"):
        FakeProvider().script(ALICE, CallOutcome.BUSY, "answered")  # type: ignore[arg-type]


def test_unused_script_shows_steps_never_reached() -> None:
    fake = FakeProvider().script(ALICE, CallOutcome.BUSY).script("+1415555O100", CallOutcome.BUSY)
    fake.place_call(dial("a1"))
    assert fake.unused_script() == {"+1415555O100": (CallOutcome.BUSY,)}


# -- unknown fate ------------------------------------------------------------------------------


def test_unknown_fate_with_an_outcome_raises_but_the_call_exists() -> None:
    clock = VirtualClock(START)
    fake = FakeProvider(clock=clock).script(ALICE, UnknownFate(CallOutcome.ANSWERED))
    with pytest.raises(ProviderUnavailable) as info:
        fake.place_call(dial("a1"))
    assert info.value.placed is None
    assert info.value.retryable is True
    view = fake.fetch_call(attempt_id="a1", external_call_id=None)
    assert view is not None
    assert not view.final
    assert view.attempt_id == "a1"
    final = fake.end_call("a1")
    assert final.outcome is CallOutcome.ANSWERED
    assert fake.fetch_call(attempt_id="a1", external_call_id=None) == final


def test_unknown_fate_without_an_outcome_placed_nothing() -> None:
    timeout = ProviderUnavailable("read timeout", provider="fake", placed=None)
    fake = FakeProvider().script(ALICE, UnknownFate(error=timeout))
    with pytest.raises(ProviderUnavailable) as info:
        fake.place_call(dial("a1"))
    assert info.value is timeout
    assert fake.fetch_call(attempt_id="a1", external_call_id=None) is None
    assert fake.pending_calls() == []


# -- ending calls ------------------------------------------------------------------------------


def test_end_call_produces_the_final_event_for_the_attempt() -> None:
    clock = VirtualClock(START)
    fake = FakeProvider("vapi-fake", clock)
    placed = fake.place_call(dial("a1"))
    assert placed.provider == "vapi-fake"
    assert placed.status is CallStatus.QUEUED
    clock.advance(timedelta(seconds=95))
    event = fake.end_call("a1", CallOutcome.VOICEMAIL, duration=42.5, sequence=3)
    assert event.final
    assert event.provider == "vapi-fake"
    assert event.attempt_id == "a1"
    assert event.external_call_id == placed.external_call_id
    assert event.outcome is CallOutcome.VOICEMAIL
    assert event.duration_seconds == 42.5
    assert event.sequence == 3
    assert event.occurred_at == START + timedelta(seconds=95)
    assert fake.pending_calls() == []


def test_durations_default_to_talk_seconds_only_for_connected_outcomes() -> None:
    fake = FakeProvider(talk_seconds=12.0)
    for i, outcome in enumerate([CallOutcome.ANSWERED, CallOutcome.BUSY, CallOutcome.OPTED_OUT]):
        fake.place_call(dial(f"a{i}", to=f"+1415555020{i}"))
        assert fake.end_call(f"a{i}", outcome).duration_seconds == (
            12.0 if outcome.connected else 0.0
        )


def test_ending_a_call_again_gives_a_duplicate_or_a_conflicting_late_event() -> None:
    fake = FakeProvider(clock=VirtualClock(START))
    fake.place_call(dial("a1"))
    first = fake.end_call("a1", CallOutcome.ANSWERED, sequence=2)
    duplicate = fake.end_call("a1")
    assert duplicate == first
    assert duplicate.event_id == first.event_id
    late = fake.end_call("a1", CallOutcome.BUSY, sequence=1)
    assert late.outcome is CallOutcome.BUSY
    assert late.sequence == 1
    assert late.event_id != first.event_id
    # the call itself keeps its first ending
    assert fake.fetch_call(attempt_id="a1", external_call_id=None) == first


def test_progress_events_move_a_call_along_and_can_arrive_late() -> None:
    fake = FakeProvider()
    fake.place_call(dial("a1"))
    ringing = fake.progress_call("a1", sequence=0)
    assert ringing.status is CallStatus.RINGING
    view = fake.fetch_call(attempt_id="a1", external_call_id=None)
    assert view is not None
    assert view.status is CallStatus.RINGING
    fake.end_call("a1", sequence=2)
    late = fake.progress_call("a1", CallStatus.IN_PROGRESS, sequence=1)
    assert late.status is CallStatus.IN_PROGRESS
    final = fake.fetch_call(attempt_id="a1", external_call_id=None)
    assert final is not None
    assert final.final
    with pytest.raises(ValueError, match="end_call"):
        fake.progress_call("a1", CallStatus.ENDED)


def test_ending_an_unknown_call_is_not_found() -> None:
    fake = FakeProvider()
    with pytest.raises(NotFound, match="nope"):
        fake.end_call("nope")
    with pytest.raises(NotFound):
        fake.complete("nope")


def test_pending_calls_lists_calls_not_ended_in_placing_order() -> None:
    fake = FakeProvider()
    for i in range(4):
        fake.place_call(dial(f"a{i}", to=f"+1415555030{i}"))
    fake.end_call("a1")
    assert [r.attempt_id for r in fake.pending_calls()] == ["a0", "a2", "a3"]
    completed = fake.complete()
    assert [e.attempt_id for e in completed] == ["a0", "a2", "a3"]
    assert fake.pending_calls() == []


# -- cancel and fetch --------------------------------------------------------------------------


def test_cancel_is_recorded_and_ends_the_call_as_a_non_retryable_error() -> None:
    fake = FakeProvider()
    ext = fake.place_call(dial("a1")).external_call_id
    fake.cancel_call(ext)
    assert fake.cancelled == [ext]
    final = fake.fetch_call(attempt_id="a1", external_call_id=ext)
    assert final is not None
    assert final.final
    assert final.outcome is CallOutcome.ERROR
    assert final.retryable is False
    assert final.error == "cancelled"
    fake.cancel_call(ext)  # already ended: recorded, nothing changes
    assert fake.cancelled == [ext, ext]
    assert fake.fetch_call(attempt_id="a1", external_call_id=ext) == final


def test_cancelling_an_unknown_call_is_refused_but_recorded() -> None:
    fake = FakeProvider()
    with pytest.raises(ProviderRejected) as info:
        fake.cancel_call("fake-99")
    assert info.value.code == "not_found"
    assert fake.cancelled == ["fake-99"]


def test_fetch_call_can_be_told_to_fail_as_if_the_provider_cannot_tell() -> None:
    fake = FakeProvider()
    ext = fake.place_call(dial("a1")).external_call_id
    fake.fetch_error = ProviderUnavailable("status endpoint down", placed=None)
    with pytest.raises(ProviderUnavailable, match="status endpoint down"):
        fake.fetch_call(attempt_id="a1", external_call_id=ext)
    fake.fetch_error = None
    view = fake.fetch_call(attempt_id="a1", external_call_id=None)
    assert view is not None
    assert view.status is CallStatus.QUEUED
    assert view.external_call_id == ext
    assert fake.fetches == [("a1", ext), ("a1", None)]


# -- automatic completion (EventSource) --------------------------------------------------------


def test_auto_complete_ends_calls_after_the_delay_and_hands_out_their_events() -> None:
    clock = VirtualClock(START)
    fake = FakeProvider(clock=clock, auto_complete_after=timedelta(seconds=30))
    fake.script(BOB, CallOutcome.BUSY)
    assert isinstance(fake, EventSource)
    assert fake.next_event_at() is None
    fake.place_call(dial("a1"))
    clock.advance(timedelta(seconds=10))
    fake.place_call(dial("b1", to=BOB))
    assert fake.next_event_at() == START + timedelta(seconds=30)
    assert fake.due_events(START + timedelta(seconds=29)) == []
    clock.advance_to(START + timedelta(seconds=35))
    (first,) = fake.due_events(clock.now())
    assert first.attempt_id == "a1"
    assert first.outcome is CallOutcome.ANSWERED
    assert first.occurred_at == START + timedelta(seconds=30)
    assert first.duration_seconds == 30.0
    clock.advance(timedelta(minutes=1))
    (second,) = fake.due_events(clock.now())
    assert second.attempt_id == "b1"
    assert second.outcome is CallOutcome.BUSY
    assert fake.next_event_at() is None


def test_a_call_ended_by_hand_is_not_ended_again_automatically() -> None:
    clock = VirtualClock(START)
    fake = FakeProvider(clock=clock, auto_complete_after=timedelta(seconds=30))
    fake.place_call(dial("a1"))
    fake.end_call("a1", CallOutcome.DECLINED)
    assert fake.next_event_at() is None
    clock.advance(timedelta(minutes=5))
    assert fake.due_events(clock.now()) == []


def test_cancelling_an_auto_completing_call_delivers_the_cancel_event() -> None:
    clock = VirtualClock(START)
    fake = FakeProvider(clock=clock, auto_complete_after=timedelta(seconds=30))
    ext = fake.place_call(dial("a1")).external_call_id
    clock.advance(timedelta(seconds=5))
    fake.cancel_call(ext)
    (event,) = fake.due_events(clock.now())
    assert event.outcome is CallOutcome.ERROR
    assert event.occurred_at == START + timedelta(seconds=5)
    clock.advance(timedelta(minutes=1))
    assert fake.due_events(clock.now()) == []


def test_queued_events_are_handed_out_when_due() -> None:
    clock = VirtualClock(START)
    fake = FakeProvider(clock=clock)
    fake.place_call(dial("a1"))
    final = fake.end_call("a1")
    fake.queue_event(final, at=START + timedelta(minutes=2))
    fake.queue_event(final)
    assert fake.next_event_at() == START
    assert fake.due_events(clock.now()) == [final]
    assert fake.next_event_at() == START + timedelta(minutes=2)
    assert fake.due_events(START + timedelta(minutes=2)) == [final]
    assert fake.due_events(START + timedelta(hours=1)) == []


def test_auto_complete_needs_a_clock() -> None:
    with pytest.raises(ConfigurationError, match="auto_complete_after"):
        FakeProvider(auto_complete_after=timedelta(seconds=30))


def test_without_a_clock_events_carry_no_time() -> None:
    fake = FakeProvider()
    fake.place_call(dial("a1"))
    (event,) = fake.complete()
    assert event.occurred_at is None


# -- async twin --------------------------------------------------------------------------------


def test_the_async_twin_shares_script_and_records() -> None:
    fake = FakeProvider().script(ALICE, ProviderUnavailable("503"), CallOutcome.BUSY)
    twin = fake.as_async()
    assert isinstance(twin, AsyncFakeProvider)
    assert twin.name == "fake"

    async def scenario() -> tuple[ProviderError | None, str, CallEvent | None]:
        error = None
        try:
            await twin.place_call(dial("a1"))
        except ProviderUnavailable as exc:
            error = exc
        placed = await twin.place_call(dial("a2", attempt=2))
        await twin.cancel_call(placed.external_call_id)
        view = await twin.fetch_call(attempt_id="a2", external_call_id=None)
        return error, placed.external_call_id, view

    error, ext, view = asyncio.run(scenario())
    assert error is not None
    assert [r.attempt_id for r in fake.calls] == ["a1", "a2"]
    assert fake.cancelled == [ext]
    assert view is not None
    assert view.outcome is CallOutcome.ERROR
    assert twin.due_events(START) == []
    assert twin.next_event_at() is None

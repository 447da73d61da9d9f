"""SimulatedProvider: a seeded provider whose calls end as its profile says."""

from __future__ import annotations

import asyncio
import math
import os
import random
import re
import subprocess
import sys
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outdial.campaign import AgentSettings
from outdial.errors import ConfigurationError, ProviderRejected, ProviderUnavailable
from outdial.outcomes import CallOutcome
from outdial.ports import CallEvent, CallStatus, DialRequest, EventSource
from outdial.retry import RandomSource
from outdial.simulation import (
    AsyncSimulatedProvider,
    Constant,
    Distribution,
    LogNormal,
    SimulatedCall,
    SimulatedProvider,
    SimulationProfile,
    Uniform,
    VirtualClock,
)

START = datetime(2026, 3, 2, 14, 0, tzinfo=timezone.utc)
AGENT = AgentSettings(provider="simulated")
FOREVER = timedelta(days=1)


def dial(i: int, *, number: str | None = None, attempt: int = 1) -> DialRequest:
    return DialRequest(
        attempt_id=f"att-{i}-{attempt}",
        campaign_id="camp",
        workspace_id="ws",
        recipient_id=f"rec-{i}",
        to=number or f"+1415{i:07d}",
        agent=AGENT,
        attempt_number=attempt,
    )


def provider(
    profile: SimulationProfile | None = None, *, seed: int | str = 1
) -> tuple[VirtualClock, SimulatedProvider]:
    clock = VirtualClock(START)
    return clock, SimulatedProvider(clock, profile, seed=seed)


def answering_profile(
    talk: Distribution | None = None, ringing_after: Distribution | None = None
) -> SimulationProfile:
    """Every call rings (``ringing`` after ``ringing_after``, 2 s by default), is picked up
    after 10 s and talks for ``talk`` (100 s by default), with progress events."""
    return SimulationProfile(
        answer_rate=1.0,
        voicemail_rate=0,
        busy_rate=0,
        failed_rate=0,
        invalid_number_rate=0,
        ring_seconds=Constant(10),
        talk_seconds=Constant(100) if talk is None else talk,
        ringing_after_seconds=Constant(2) if ringing_after is None else ringing_after,
        progress_events=True,
    )


def drain(clock: VirtualClock, sim: SimulatedProvider) -> list[CallEvent]:
    """Advance the clock event by event and collect everything delivered."""
    events: list[CallEvent] = []
    while (at := sim.next_event_at()) is not None:
        clock.advance_to(max(at, clock.now()))
        events.extend(sim.due_events(clock.now()))
    return events


def occurred(event: CallEvent) -> datetime:
    assert event.occurred_at is not None
    return event.occurred_at


def place_all(sim: SimulatedProvider, requests: list[DialRequest]) -> None:
    for request in requests:
        sim.place_call(request)


# -- determinism ------------------------------------------------------------------------


def run_once(seed: int | str, n: int = 300) -> tuple[list[SimulatedCall], list[CallEvent]]:
    clock, sim = provider(
        SimulationProfile(duplicate_rate=0.1, reorder_rate=0.1, progress_events=True), seed=seed
    )
    for i in range(n):
        sim.place_call(dial(i))
        clock.advance(timedelta(seconds=2))
    events = drain(clock, sim)
    return sim.call_log(), events


def test_same_seed_gives_the_same_calls_and_the_same_events() -> None:
    log_a, events_a = run_once(seed=42)
    log_b, events_b = run_once(seed=42)
    assert log_a == log_b
    assert events_a == events_b
    assert [e.event_id for e in events_a] == [e.event_id for e in events_b]


def test_a_different_seed_gives_a_different_run() -> None:
    log_a, _ = run_once(seed=42)
    log_b, _ = run_once(seed=43)
    assert [c.outcome for c in log_a] != [c.outcome for c in log_b]
    assert [c.ended_at for c in log_a] != [c.ended_at for c in log_b]


def test_a_number_keeps_its_fate_whatever_the_order_of_calls() -> None:
    requests = [dial(i, attempt=a) for i in range(200) for a in (1, 2)]
    _, forward = provider(seed=7)
    place_all(forward, requests)
    shuffled = requests[:]
    random.Random(0).shuffle(shuffled)
    _, backward = provider(seed=7)
    place_all(backward, shuffled)

    def fate(sim: SimulatedProvider) -> dict[str, tuple[CallOutcome, float, float]]:
        return {
            c.attempt_id: (
                c.outcome,
                c.duration_seconds,
                (c.ended_at - c.placed_at).total_seconds(),
            )
            for c in sim.call_log()
        }

    assert fate(forward) == fate(backward)


def test_outcomes_do_not_depend_on_the_python_hash_seed() -> None:
    script = (
        "from datetime import datetime, timezone\n"
        "from outdial.campaign import AgentSettings\n"
        "from outdial.ports import DialRequest\n"
        "from outdial.simulation import SimulatedProvider, VirtualClock\n"
        "clock = VirtualClock(datetime(2026, 3, 2, 14, tzinfo=timezone.utc))\n"
        "sim = SimulatedProvider(clock, seed='xproc')\n"
        "for i in range(50):\n"
        "    sim.place_call(DialRequest(attempt_id=f'a{i}', campaign_id='c', workspace_id='w',\n"
        "        recipient_id=f'r{i}', to=f'+1415{i:07d}', agent=AgentSettings()))\n"
        "print(hash('probe'))\n"
        "print([(c.outcome.value, c.ended_at.isoformat()) for c in sim.call_log()])\n"
    )
    child_seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
    env = {**os.environ, "PYTHONHASHSEED": child_seed}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    child_hash, child_calls = result.stdout.splitlines()
    assert int(child_hash) != hash("probe")  # the two processes really hash differently

    clock = VirtualClock(START)
    sim = SimulatedProvider(clock, seed="xproc")
    for i in range(50):
        sim.place_call(
            DialRequest(
                attempt_id=f"a{i}",
                campaign_id="c",
                workspace_id="w",
                recipient_id=f"r{i}",
                to=f"+1415{i:07d}",
                agent=AgentSettings(),
            )
        )
    here = [(c.outcome.value, c.ended_at.isoformat()) for c in sim.call_log()]
    assert child_calls == repr(here)


# -- outcome mix ----------------------------------------------------------------------------


def within(observed: int, n: int, p: float, sigmas: float = 4.5) -> bool:
    spread = sigmas * math.sqrt(max(p * (1 - p), 1e-12) / n)
    return abs(observed / n - p) <= spread + 1e-12


def test_first_attempts_follow_the_configured_mix_over_10000_calls() -> None:
    profile = SimulationProfile(
        answer_rate=0.30,
        voicemail_rate=0.15,
        busy_rate=0.08,
        failed_rate=0.03,
        declined_rate=0.04,
        opted_out_rate=0.02,
        invalid_number_rate=0.05,
    )
    _, sim = provider(profile, seed="mix")
    n = 10_000
    place_all(sim, [dial(i) for i in range(n)])
    counts = Counter(c.outcome for c in sim.call_log())
    expected = {
        CallOutcome.ANSWERED: 0.30,
        CallOutcome.VOICEMAIL: 0.15,
        CallOutcome.BUSY: 0.08,
        CallOutcome.ERROR: 0.03,
        CallOutcome.DECLINED: 0.04,
        CallOutcome.OPTED_OUT: 0.02,
        CallOutcome.INVALID_NUMBER: 0.05,
        CallOutcome.NO_ANSWER: profile.no_answer_rate,
    }
    assert profile.no_answer_rate == pytest.approx(0.33)
    for outcome, rate in expected.items():
        assert within(counts[outcome], n, rate), (outcome, counts[outcome], rate)


def test_a_profile_with_everything_answered_answers_every_call() -> None:
    profile = SimulationProfile(
        answer_rate=1.0, voicemail_rate=0, busy_rate=0, failed_rate=0, invalid_number_rate=0
    )
    _, sim = provider(profile)
    place_all(sim, [dial(i) for i in range(500)])
    assert {c.outcome for c in sim.call_log()} == {CallOutcome.ANSWERED}


def test_invalid_numbers_stay_invalid_on_every_attempt() -> None:
    _, sim = provider(SimulationProfile(invalid_number_rate=0.2), seed=3)
    place_all(sim, [dial(i, attempt=a) for i in range(400) for a in (1, 2, 3)])
    by_number: dict[str, set[CallOutcome]] = defaultdict(set)
    for call in sim.call_log():
        by_number[call.number].add(call.outcome)
    invalid = [n for n, outcomes in by_number.items() if CallOutcome.INVALID_NUMBER in outcomes]
    assert within(len(invalid), 400, 0.2)
    assert all(by_number[n] == {CallOutcome.INVALID_NUMBER} for n in invalid)


def test_unreachable_numbers_never_answer_and_reachable_ones_vary() -> None:
    profile = SimulationProfile(reachability=0.6, invalid_number_rate=0.0)
    _, sim = provider(profile, seed=5)
    attempts = 6
    place_all(sim, [dial(i, attempt=a) for i in range(1000) for a in range(1, attempts + 1)])
    by_number: dict[str, list[CallOutcome]] = defaultdict(list)
    for call in sim.call_log():
        by_number[call.number].append(call.outcome)
    never = [n for n, outs in by_number.items() if set(outs) == {CallOutcome.NO_ANSWER}]
    # unreachable (40 %) plus reachable numbers that happened to miss 6 times
    chance_of_six_misses = profile.no_answer_rate**attempts
    expected_share = 0.4 + 0.6 * chance_of_six_misses
    assert within(len(never), 1000, expected_share)
    answered_somewhere = [n for n, outs in by_number.items() if CallOutcome.ANSWERED in outs]
    assert len(answered_somewhere) > 400


def test_later_attempts_of_a_reachable_number_draw_afresh() -> None:
    _, sim = provider(SimulationProfile(invalid_number_rate=0.0), seed=9)
    place_all(sim, [dial(i, attempt=a) for i in range(300) for a in (1, 2)])
    log = sim.call_log()
    first = {c.number: c.outcome for c in log if c.attempt_number == 1}
    second = {c.number: c.outcome for c in log if c.attempt_number == 2}
    changed = sum(first[n] != second[n] for n in first)
    assert changed > 100


# -- timing and events ----------------------------------------------------------------------


def test_each_call_reports_its_events_in_order_with_sequences_from_zero() -> None:
    clock, sim = provider(SimulationProfile(progress_events=True), seed=11)
    for i in range(300):
        placed = sim.place_call(dial(i))
        assert placed.status is CallStatus.QUEUED
        assert placed.provider == "simulated"
        assert placed.external_call_id.startswith("SIM-")
        clock.advance(timedelta(seconds=3))
    events = drain(clock, sim)

    by_call: dict[str, list[CallEvent]] = defaultdict(list)
    for event in events:
        by_call[event.external_call_id or ""].append(event)
    assert len(by_call) == 300
    log = {c.external_call_id: c for c in sim.call_log()}
    for external_id, call_events in by_call.items():
        assert [e.sequence for e in call_events] == list(range(len(call_events)))
        assert [e.event_id for e in call_events] == [
            f"{external_id}:{n}" for n in range(len(call_events))
        ]
        assert call_events[-1].final
        assert not any(e.final for e in call_events[:-1])
        times = [occurred(e) for e in call_events]
        assert times == sorted(times)
        call = log[external_id]
        statuses = [e.status for e in call_events]
        if call.outcome in (CallOutcome.ANSWERED, CallOutcome.VOICEMAIL):
            assert statuses == [CallStatus.RINGING, CallStatus.IN_PROGRESS, CallStatus.ENDED]
        elif call.outcome is CallOutcome.NO_ANSWER:
            assert statuses == [CallStatus.RINGING, CallStatus.ENDED]
        else:
            assert statuses == [CallStatus.ENDED]
        final = call_events[-1]
        assert final.outcome is call.outcome
        assert final.attempt_id == call.attempt_id
        assert final.occurred_at == call.ended_at
    delivered_at = [occurred(e) for e in events]
    assert delivered_at == sorted(delivered_at)


def test_durations_are_talk_time_for_connected_calls_and_zero_otherwise() -> None:
    profile = SimulationProfile(
        ring_seconds=Uniform(5, 10),
        no_answer_seconds=Constant(30),
        voicemail_after_seconds=Constant(20),
        fail_seconds=Uniform(1, 2),
        talk_seconds=Uniform(60, 120),
        voicemail_seconds=Constant(15),
        ringing_after_seconds=Constant(1),
    )
    _, sim = provider(profile, seed=13)
    place_all(sim, [dial(i) for i in range(1000)])
    seen = set()
    for call in sim.call_log():
        seen.add(call.outcome)
        total = (call.ended_at - call.placed_at).total_seconds()
        if call.outcome is CallOutcome.ANSWERED:
            assert call.answered_at is not None
            assert 5 <= (call.answered_at - call.placed_at).total_seconds() <= 10
            assert 60 <= call.duration_seconds <= 120
            assert (call.ended_at - call.answered_at).total_seconds() == pytest.approx(
                call.duration_seconds, abs=1e-6
            )
        elif call.outcome is CallOutcome.VOICEMAIL:
            assert call.duration_seconds == 15
            assert total == pytest.approx(35)
        elif call.outcome is CallOutcome.NO_ANSWER:
            assert call.duration_seconds == 0
            assert total == 30
        else:
            assert call.duration_seconds == 0
            assert call.answered_at is None
            assert 1 <= total <= 2
    assert {CallOutcome.ANSWERED, CallOutcome.VOICEMAIL, CallOutcome.NO_ANSWER} <= seen


def test_due_events_hands_out_only_what_is_due_and_next_event_at_is_the_earliest() -> None:
    profile = answering_profile(Constant(50))
    _clock, sim = provider(profile)
    assert sim.next_event_at() is None
    sim.place_call(dial(1))
    assert sim.next_event_at() == START + timedelta(seconds=2)
    assert sim.due_events(START + timedelta(seconds=1)) == []
    (ringing,) = sim.due_events(START + timedelta(seconds=2))
    assert ringing.status is CallStatus.RINGING
    assert sim.next_event_at() == START + timedelta(seconds=10)
    (answered,) = sim.due_events(START + timedelta(seconds=59))
    assert answered.status is CallStatus.IN_PROGRESS
    assert sim.next_event_at() == START + timedelta(seconds=60)
    (ended,) = sim.due_events(START + timedelta(minutes=5))
    assert ended.final
    assert ended.duration_seconds == 50
    assert ended.sequence == 2
    assert sim.next_event_at() is None
    assert sim.due_events(START + timedelta(hours=1)) == []


def test_by_default_only_the_final_event_is_sent() -> None:
    clock, sim = provider(seed=17)
    place_all(sim, [dial(i) for i in range(200)])
    events = drain(clock, sim)
    assert len(events) == 200
    assert all(e.final and e.sequence == 0 for e in events)


def ringing_delays(after: Distribution, n: int = 200) -> list[float]:
    """Seconds from placement to the ringing event of ``n`` calls that ring for 10 s."""
    profile = answering_profile(Uniform(30, 90), after)
    clock, sim = provider(profile, seed=5)
    place_all(sim, [dial(i) for i in range(n)])
    return [
        (occurred(e) - START).total_seconds()
        for e in drain(clock, sim)
        if e.status is CallStatus.RINGING
    ]


def test_a_constant_ringing_delay_rings_every_call_after_that_delay() -> None:
    assert ringing_delays(Constant(2.5)) == [2.5] * 200
    assert ringing_delays(Constant(12)) == [10.0] * 200  # never after the pick-up


def test_a_ringing_delay_that_is_not_a_constant_is_drawn_for_each_call() -> None:
    delays = ringing_delays(Uniform(3, 7))
    assert len(delays) == 200
    assert all(3 <= d <= 7 for d in delays)
    assert len(set(delays)) > 150


def test_a_constant_subclass_ringing_delay_is_sampled_not_read() -> None:
    @attrs.frozen
    class Later(Constant):
        def sample(self, rng: RandomSource) -> float:
            return self.value + 1

    assert ringing_delays(Later(2)) == [3.0] * 200


def test_a_constant_ringing_delay_takes_no_draw_from_the_call() -> None:
    # a Constant draws nothing, so whatever its value the calls end the same way
    def ends(after: float) -> list[tuple[CallOutcome, datetime]]:
        _, sim = provider(SimulationProfile(ringing_after_seconds=Constant(after)), seed=8)
        place_all(sim, [dial(i) for i in range(300)])
        return [(call.outcome, call.ended_at) for call in sim.call_log()]

    assert ends(1.0) == ends(4.0)


def test_a_naive_instant_is_refused_by_due_events() -> None:
    _, sim = provider()
    with pytest.raises(ValueError, match="naive"):
        sim.due_events(datetime(2026, 3, 2, 15, 0))


# -- fetch_call -------------------------------------------------------------------------------


def test_fetch_call_follows_the_call_from_queued_to_its_final_event() -> None:
    profile = answering_profile(Constant(50))
    clock, sim = provider(profile)
    placed = sim.place_call(dial(1))
    ext = placed.external_call_id

    def view() -> CallEvent | None:
        return sim.fetch_call(attempt_id="att-1-1", external_call_id=None)

    def status() -> CallStatus | None:
        seen = view()
        return None if seen is None else seen.status

    assert status() is CallStatus.QUEUED
    clock.advance(timedelta(seconds=2))
    assert status() is CallStatus.RINGING
    clock.advance(timedelta(seconds=8))
    assert status() is CallStatus.IN_PROGRESS
    clock.advance(timedelta(seconds=50))
    final = view()
    delivered = [e for e in sim.due_events(clock.now()) if e.final]
    assert final is not None
    assert final.final
    assert delivered == [final]
    assert sim.fetch_call(attempt_id="other", external_call_id=ext) == final


def test_fetch_call_of_a_call_never_placed_is_none() -> None:
    _, sim = provider()
    assert sim.fetch_call(attempt_id="nope", external_call_id=None) is None
    assert sim.fetch_call(attempt_id="nope", external_call_id="SIM-999999") is None


def test_fetch_call_by_attempt_id_finds_the_latest_call_of_that_attempt() -> None:
    clock, sim = provider()

    def by_attempt(i: int) -> str | None:
        seen = sim.fetch_call(attempt_id=f"att-{i}-1", external_call_id=None)
        return None if seen is None else seen.external_call_id

    first = sim.place_call(dial(1)).external_call_id
    assert by_attempt(1) == first
    assert by_attempt(2) is None
    # calls placed after a look-up are found too, and placing the same attempt
    # again (as after an unknown-fate error) makes the newer call the one reported
    second = sim.place_call(dial(2)).external_call_id
    again = sim.place_call(dial(1)).external_call_id
    assert by_attempt(2) == second
    assert by_attempt(1) == again != first
    clock.advance(timedelta(seconds=1))
    third = sim.place_call(dial(1)).external_call_id
    assert [by_attempt(1), by_attempt(2)] == [third, second]


# -- provider faults --------------------------------------------------------------------------


def test_provider_errors_say_the_call_was_not_placed() -> None:
    clock, sim = provider(SimulationProfile(provider_error_rate=0.3), seed=19)
    errors: list[tuple[int, ProviderUnavailable]] = []
    for i in range(1000):
        try:
            sim.place_call(dial(i))
        except ProviderUnavailable as exc:
            errors.append((i, exc))
    assert within(len(errors), 1000, 0.3)
    for i, error in errors:
        assert error.placed is False
        assert error.retryable is True
        assert error.provider == "simulated"
        assert sim.fetch_call(attempt_id=f"att-{i}-1", external_call_id=None) is None
    assert sim.errors_raised == len(errors)
    assert sim.calls_placed == 1000 - len(errors)
    assert len(drain(clock, sim)) >= sim.calls_placed


def test_placing_the_same_attempt_again_after_an_error_can_succeed() -> None:
    _, sim = provider(SimulationProfile(provider_error_rate=0.5), seed=23)
    request = dial(1)
    outcomes = []
    for _ in range(40):
        try:
            sim.place_call(request)
            outcomes.append("placed")
        except ProviderUnavailable:
            outcomes.append("error")
    assert set(outcomes) == {"placed", "error"}


def test_a_simulated_error_leaves_the_provider_free_for_other_threads() -> None:
    clock, sim = provider(SimulationProfile(provider_error_rate=1.0))
    with pytest.raises(ProviderUnavailable):
        sim.place_call(dial(1))
    seen: list[tuple[datetime | None, list[CallEvent], int]] = []

    def look() -> None:
        seen.append((sim.next_event_at(), sim.due_events(clock.now()), sim.in_flight))

    # from another thread, with a time limit: a lock left held would block it
    other = threading.Thread(target=look)
    other.start()
    other.join(timeout=10)
    assert not other.is_alive()
    assert seen == [(None, [], 0)]


def test_after_an_unknown_fate_error_fetch_call_tells_the_truth() -> None:
    profile = SimulationProfile(unknown_fate_rate=1.0, unknown_fate_placed_rate=0.5)
    clock, sim = provider(profile, seed=29)
    for i in range(400):
        with pytest.raises(ProviderUnavailable) as info:
            sim.place_call(dial(i))
        assert info.value.placed is None
        assert info.value.retryable is True
    existing = {c.attempt_id: c for c in sim.call_log()}
    assert all(c.unknown_fate for c in existing.values())
    assert within(len(existing), 400, 0.5)
    assert sim.calls_placed == len(existing)

    clock.advance(FOREVER)
    for i in range(400):
        truth = sim.fetch_call(attempt_id=f"att-{i}-1", external_call_id=None)
        call = existing.get(f"att-{i}-1")
        if call is None:
            assert truth is None
        else:
            assert truth is not None
            assert truth.final
            assert truth.outcome is call.outcome
            assert truth.external_call_id == call.external_call_id
    # the calls that exist send their events like any other
    finals = [e for e in sim.due_events(clock.now()) if e.final]
    assert {e.attempt_id for e in finals} == set(existing)


def test_fault_rates_over_one_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="unknown_fate_rate"):
        SimulationProfile(provider_error_rate=0.6, unknown_fate_rate=0.6)


# -- cancel -------------------------------------------------------------------------------------


def test_cancel_ends_a_call_now_with_a_non_retryable_error() -> None:
    clock, sim = provider(answering_profile())
    ext = sim.place_call(dial(1)).external_call_id
    clock.advance(timedelta(seconds=30))
    early = sim.due_events(clock.now())
    assert [e.status for e in early] == [CallStatus.RINGING, CallStatus.IN_PROGRESS]
    sim.cancel_call(ext)
    (final,) = sim.due_events(clock.now())
    assert final.final
    assert final.outcome is CallOutcome.ERROR
    assert final.retryable is False
    assert final.error == "cancelled"
    assert final.sequence == 2
    assert final.duration_seconds == pytest.approx(20)
    assert final.occurred_at == clock.now()
    assert sim.next_event_at() is None  # the original final event will never come
    assert drain(clock, sim) == []
    assert sim.fetch_call(attempt_id="att-1-1", external_call_id=ext) == final
    (logged,) = sim.call_log()
    assert logged.cancelled
    assert logged.ended_at == clock.now()
    assert sim.calls_cancelled == 1


def test_cancel_before_ringing_drops_the_progress_events() -> None:
    clock, sim = provider(answering_profile())
    ext = sim.place_call(dial(1)).external_call_id
    clock.advance(timedelta(seconds=1))
    sim.cancel_call(ext)
    events = drain(clock, sim)
    assert [(e.status, e.sequence) for e in events] == [(CallStatus.ENDED, 0)]
    assert events[0].duration_seconds == 0


def test_cancelling_a_call_that_ended_changes_nothing() -> None:
    clock, sim = provider(answering_profile())
    ext = sim.place_call(dial(1)).external_call_id
    clock.advance(FOREVER)
    before = sim.fetch_call(attempt_id="att-1-1", external_call_id=ext)
    sim.cancel_call(ext)
    assert sim.fetch_call(attempt_id="att-1-1", external_call_id=ext) == before
    assert before is not None
    assert before.outcome is CallOutcome.ANSWERED
    assert sim.calls_cancelled == 0


def test_cancelling_an_unknown_call_is_refused() -> None:
    _, sim = provider()
    with pytest.raises(ProviderRejected, match="SIM-000042") as info:
        sim.cancel_call("SIM-000042")
    assert info.value.code == "not_found"


@pytest.mark.parametrize(
    "lookalike", ["SIM-1", "SIM-0000001", "sim-000001", "SIM-000000", "SIM-000002", "SIM-", "x"]
)
def test_an_id_that_only_looks_like_a_placed_call_is_unknown(lookalike: str) -> None:
    _, sim = provider()
    placed = sim.place_call(dial(1)).external_call_id
    assert placed == "SIM-000001"
    with pytest.raises(ProviderRejected) as info:
        sim.cancel_call(lookalike)
    assert info.value.code == "not_found"
    assert sim.fetch_call(attempt_id="nobody", external_call_id=lookalike) is None
    # an unknown external id falls back to the attempt id
    found = sim.fetch_call(attempt_id="att-1-1", external_call_id=lookalike)
    assert found is not None and found.external_call_id == placed


def test_a_cancel_among_many_calls_supersedes_only_that_calls_scheduled_events() -> None:
    clock, sim = provider(answering_profile())
    ids = [sim.place_call(dial(i)).external_call_id for i in range(1, 4)]
    clock.advance(timedelta(seconds=1))
    sim.cancel_call(ids[1])  # before it rang: its ringing, in-progress and end never come
    events = drain(clock, sim)
    by_call = Counter(e.external_call_id for e in events)
    assert by_call == {ids[0]: 3, ids[1]: 1, ids[2]: 3}
    instants = [e.occurred_at for e in events]
    assert None not in instants
    assert instants == sorted(t for t in instants if t is not None)
    cancelled = [e for e in events if e.external_call_id == ids[1]]
    assert cancelled[0].error == "cancelled" and cancelled[0].retryable is False
    others = [e for e in events if e.final and e.external_call_id != ids[1]]
    assert all(e.error is None and e.retryable is None for e in others)
    assert sim.in_flight == 0
    assert [c.cancelled for c in sim.call_log()] == [False, True, False]


@settings(max_examples=30, deadline=None)
@given(
    steps=st.lists(st.integers(min_value=0, max_value=90), min_size=1, max_size=25),
    progress=st.booleans(),
)
def test_next_event_at_is_due_exactly_when_due_events_has_something(
    steps: list[int], progress: bool
) -> None:
    # the runner relies on it: it asks for events only once next_event_at has come
    profile = SimulationProfile(progress_events=progress, duplicate_rate=0.3)
    clock, sim = provider(profile)
    for i, seconds in enumerate(steps):
        if i % 3 == 0:
            sim.place_call(dial(i))
        clock.advance(timedelta(seconds=seconds))
        nxt = sim.next_event_at()
        due = sim.due_events(clock.now())
        assert bool(due) == (nxt is not None and nxt <= clock.now())
        if due:
            assert due[0].occurred_at is not None
            later = sim.next_event_at()
            assert later is None or later > clock.now()


# -- delivery knobs -------------------------------------------------------------------------------


def test_duplicates_repeat_the_final_event_later_with_the_same_event_id() -> None:
    clock, sim = provider(SimulationProfile(duplicate_rate=1.0), seed=31)
    place_all(sim, [dial(i) for i in range(100)])
    events = drain(clock, sim)
    finals: dict[str, list[CallEvent]] = defaultdict(list)
    for event in events:
        if event.final:
            finals[event.external_call_id or ""].append(event)
    assert len(finals) == 100
    for copies in finals.values():
        assert len(copies) == 2
        assert copies[0] == copies[1]
        assert copies[0].event_id == copies[1].event_id


def test_some_duplicates_at_a_partial_rate() -> None:
    clock, sim = provider(SimulationProfile(duplicate_rate=0.25), seed=37)
    place_all(sim, [dial(i) for i in range(2000)])
    finals = Counter(e.external_call_id for e in drain(clock, sim) if e.final)
    doubled = sum(1 for count in finals.values() if count == 2)
    assert within(doubled, 2000, 0.25)


def test_reorder_delivers_the_last_progress_event_after_the_final_one() -> None:
    clock, sim = provider(SimulationProfile(reorder_rate=1.0, progress_events=True), seed=41)
    place_all(sim, [dial(i) for i in range(200)])
    events = drain(clock, sim)
    by_call: dict[str, list[CallEvent]] = defaultdict(list)
    for event in events:
        by_call[event.external_call_id or ""].append(event)
    reordered = 0
    for call_events in by_call.values():
        if len(call_events) == 1:  # busy / failed / invalid: nothing to reorder
            continue
        last = call_events[-1]
        assert not last.final
        final = next(e for e in call_events if e.final)
        assert last.sequence is not None
        assert final.sequence is not None
        assert last.sequence == final.sequence - 1
        assert last.occurred_at is not None
        assert final.occurred_at is not None
        assert last.occurred_at <= final.occurred_at
        reordered += 1
    assert reordered > 150


def test_delivery_knobs_never_change_what_happens_to_a_call() -> None:
    requests = [dial(i) for i in range(300)]
    _, plain = provider(seed=43)
    _, noisy = provider(
        SimulationProfile(duplicate_rate=0.5, reorder_rate=0.5, progress_events=True), seed=43
    )
    place_all(plain, requests)
    place_all(noisy, requests)
    assert plain.call_log() == noisy.call_log()


def test_reorder_without_progress_events_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="progress_events"):
        SimulationProfile(reorder_rate=0.1, progress_events=False)


# -- counters and the log --------------------------------------------------------------------------


def test_max_concurrent_counts_calls_in_progress_at_each_placement() -> None:
    clock, sim = provider(answering_profile())  # every call lasts 110 s
    for i in range(5):
        sim.place_call(dial(i))
    assert sim.max_concurrent == 5
    assert sim.in_flight == 5
    clock.advance(timedelta(seconds=200))
    assert sim.in_flight == 0
    for i in range(5, 8):
        sim.place_call(dial(i))
        clock.advance(timedelta(seconds=60))
    assert sim.max_concurrent == 5  # never more than 2 at once the second time
    assert sim.in_flight == 1
    assert sim.calls_placed == 8
    assert sim.in_flight_at(START + timedelta(seconds=50)) == 5
    assert sim.in_flight_at(START + timedelta(seconds=110)) == 0
    assert sim.in_flight_at(START + timedelta(seconds=200)) == 1
    assert sim.in_flight_at(START + timedelta(seconds=261)) == 2


def test_calling_a_number_that_is_still_on_a_call_is_counted_as_an_overlap() -> None:
    clock, sim = provider(answering_profile())
    sim.place_call(dial(1, number="+14155550100"))
    sim.place_call(dial(2, number="+14155550100", attempt=2))
    assert sim.overlapping_calls == 1
    clock.advance(timedelta(seconds=500))
    sim.place_call(dial(3, number="+14155550100", attempt=3))
    assert sim.overlapping_calls == 1


def test_a_cancelled_call_stops_counting_as_in_flight() -> None:
    clock, sim = provider(answering_profile())
    ext = sim.place_call(dial(1)).external_call_id
    clock.advance(timedelta(seconds=5))
    sim.cancel_call(ext)
    assert sim.in_flight == 0
    sim.place_call(dial(2))
    assert sim.max_concurrent == 1


def test_cancelling_one_of_several_calls_that_end_together_ends_only_that_one() -> None:
    clock, sim = provider(answering_profile())  # every call lasts 110 s: these end together
    ids = [sim.place_call(dial(i)).external_call_id for i in range(3)]
    clock.advance(timedelta(seconds=30))
    sim.cancel_call(ids[1])
    assert sim.in_flight == 2
    clock.advance(timedelta(seconds=79))
    assert sim.in_flight == 2  # the other two end at 110 s, as scheduled
    clock.advance(timedelta(seconds=1))
    assert sim.in_flight == 0
    sim.place_call(dial(3))
    assert (sim.in_flight, sim.max_concurrent) == (1, 3)


def test_a_number_is_busy_while_any_of_its_calls_is_in_progress() -> None:
    number = "+14155550100"
    clock, sim = provider(answering_profile())  # every call lasts 110 s

    def call(attempt: int) -> str:
        return sim.place_call(dial(1, number=number, attempt=attempt)).external_call_id

    first = call(1)  # ends at 110 s
    clock.advance(timedelta(seconds=50))
    second = call(2)  # on while the first is: ends at 160 s
    assert sim.overlapping_calls == 1
    clock.advance(timedelta(seconds=10))
    sim.cancel_call(second)  # the first is still on
    third = call(3)
    assert sim.overlapping_calls == 2
    sim.cancel_call(first)  # the third is still on
    fourth = call(4)
    assert sim.overlapping_calls == 3
    sim.cancel_call(third)
    sim.cancel_call(fourth)  # nothing left on that number
    call(5)
    assert sim.overlapping_calls == 3
    clock.advance(timedelta(seconds=110))  # the fifth has ended
    call(6)
    assert sim.overlapping_calls == 3


@settings(max_examples=40, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["place", "wait", "cancel"]), st.integers(0, 120)),
        max_size=40,
    ),
    constant=st.booleans(),
)
def test_the_counters_agree_with_the_call_log(steps: list[tuple[str, int]], constant: bool) -> None:
    # max_concurrent and overlapping_calls, recounted from the log: a call is in progress
    # from its placement until it really ended (a cancel ends it then). The clock only
    # moves forward and each cancel comes after every placement so far, so a call's end in
    # the log is also what was known at each placement. Constant timings make many calls
    # end at the same instant.
    profile = answering_profile() if constant else SimulationProfile(invalid_number_rate=0)
    clock, sim = provider(profile)
    external_ids: list[str] = []
    for i, (step, n) in enumerate(steps):
        if step == "place":
            number = f"+1415555{n % 4:04d}"  # four numbers: overlaps happen
            external_ids.append(sim.place_call(dial(i, number=number)).external_call_id)
        elif step == "wait":
            clock.advance(timedelta(seconds=n))
        elif external_ids:
            clock.advance(timedelta(seconds=1))  # after every placement so far (see above)
            sim.cancel_call(external_ids[n % len(external_ids)])
    log = sim.call_log()

    def on_at(t: datetime, calls: list[SimulatedCall]) -> list[SimulatedCall]:
        return [c for c in calls if c.placed_at <= t < c.ended_at]

    most = overlaps = 0
    for i, call in enumerate(log):
        on = on_at(call.placed_at, log[: i + 1])
        most = max(most, len(on))
        overlaps += any(c.number == call.number for c in on if c is not call)
    assert sim.max_concurrent == most
    assert sim.overlapping_calls == overlaps
    assert sim.in_flight == len(on_at(clock.now(), log))


def test_the_call_log_keeps_placement_order_and_the_real_ending() -> None:
    clock, sim = provider(seed=47)
    for i in range(20):
        sim.place_call(dial(i))
        clock.advance(timedelta(seconds=1))
    log = sim.call_log()
    assert [c.attempt_id for c in log] == [f"att-{i}-1" for i in range(20)]
    assert [c.external_call_id for c in log] == [f"SIM-{i:06d}" for i in range(1, 21)]
    assert all(c.ended_at >= c.placed_at for c in log)
    assert [c.placed_at for c in log] == [START + timedelta(seconds=i) for i in range(20)]


# every outcome rate 0 (so every call ends no_answer, the remainder), with progress events
_NO_ANSWER = SimulationProfile(
    answer_rate=0.0,
    voicemail_rate=0.0,
    busy_rate=0.0,
    failed_rate=0.0,
    invalid_number_rate=0.0,
    progress_events=True,
)


class _SettableClock:
    """A clock that goes wherever it is set, backwards included (as a wall clock can)."""

    def __init__(self, now: datetime) -> None:
        self.t = now

    def now(self) -> datetime:
        return self.t


@pytest.mark.parametrize(
    "at",
    [
        START - timedelta(days=3650, microseconds=7),  # before the provider was created
        datetime(9999, 12, 30, 23, 59, 59, 999_999, tzinfo=timezone.utc),  # the far end
    ],
)
def test_a_call_at_any_instant_a_datetime_can_be_keeps_exact_times(at: datetime) -> None:
    clock = _SettableClock(START)
    sim = SimulatedProvider(clock, attrs.evolve(_NO_ANSWER, answer_rate=1.0, progress_events=False))
    clock.t = at
    sim.place_call(dial(1))
    (call,) = sim.call_log()
    assert call.placed_at == at
    assert call.answered_at is not None and at < call.answered_at < call.ended_at
    talk = (call.ended_at - call.answered_at).total_seconds()  # rounded to the microsecond
    assert call.duration_seconds == pytest.approx(talk, abs=1e-6)
    assert sim.in_flight_at(at) == 1
    assert sim.in_flight_at(call.ended_at) == 0
    (event,) = sim.due_events(call.ended_at)
    assert event.occurred_at == call.ended_at
    assert event.duration_seconds == call.duration_seconds


@pytest.mark.parametrize(
    ("profile", "rang"),
    [
        (attrs.evolve(_NO_ANSWER, busy_rate=1.0), False),
        (_NO_ANSWER, True),
    ],
    ids=["busy", "no_answer"],
)
def test_calls_that_never_ring_or_never_pick_up_report_no_such_instant(
    profile: SimulationProfile, rang: bool
) -> None:
    clock, sim = provider(profile)
    sim.place_call(dial(1))
    (call,) = sim.call_log()
    assert call.answered_at is None
    events = drain(clock, sim)
    assert [e.status for e in events] == [CallStatus.RINGING] * rang + [CallStatus.ENDED]
    assert all(e.occurred_at is not None and e.occurred_at >= START for e in events)
    assert events[-1].sequence == int(rang)


# -- async face and protocols ----------------------------------------------------------------------


def test_the_async_face_shares_state_with_the_provider() -> None:
    clock, sim = provider(answering_profile())
    face = sim.as_async()
    assert isinstance(face, AsyncSimulatedProvider)
    assert face.name == "simulated"
    assert isinstance(face, EventSource)
    assert isinstance(sim, EventSource)

    async def scenario() -> tuple[str, CallEvent | None]:
        placed = await face.place_call(dial(1))
        clock.advance(timedelta(seconds=3))
        seen = await face.fetch_call(attempt_id="att-1-1", external_call_id=None)
        await face.cancel_call(placed.external_call_id)
        return placed.external_call_id, seen

    ext, seen = asyncio.run(scenario())
    assert seen is not None
    assert seen.status is CallStatus.RINGING
    assert sim.calls_placed == 1
    assert sim.calls_cancelled == 1
    events = face.due_events(clock.now())
    assert [e.status for e in events] == [CallStatus.RINGING, CallStatus.ENDED]
    assert face.next_event_at() is None
    assert events[-1].external_call_id == ext


def test_a_custom_name_is_used_in_every_event() -> None:
    clock = VirtualClock(START)
    sim = SimulatedProvider(clock, name="sim-b")
    assert sim.place_call(dial(1)).provider == "sim-b"
    clock.advance(FOREVER)
    assert {e.provider for e in sim.due_events(clock.now())} == {"sim-b"}


# -- profile and distributions -------------------------------------------------------------------


def test_outcome_rates_over_one_are_refused_naming_each_rate() -> None:
    with pytest.raises(ConfigurationError, match=r"answer_rate 0\.7") as info:
        SimulationProfile(answer_rate=0.7, voicemail_rate=0.4)
    assert "add up to over 1" in str(info.value)


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan, "0.3", True])
def test_a_rate_outside_zero_to_one_is_refused(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="busy_rate"):
        SimulationProfile(busy_rate=bad)  # type: ignore[arg-type]


def test_progress_events_must_be_a_flag() -> None:
    with pytest.raises(ConfigurationError, match="progress_events"):
        SimulationProfile(progress_events="yes")  # type: ignore[arg-type]


def test_a_timing_that_is_not_a_distribution_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="talk_seconds"):
        SimulationProfile(talk_seconds=60)  # type: ignore[arg-type]


def test_the_remainder_of_the_mix_is_no_answer() -> None:
    assert SimulationProfile().no_answer_rate == pytest.approx(1 - 0.35 - 0.15 - 0.05 - 0.02 - 0.02)
    full = SimulationProfile(
        answer_rate=0.5, voicemail_rate=0.5, busy_rate=0, failed_rate=0, invalid_number_rate=0
    )
    assert full.no_answer_rate == 0


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: Uniform(5, 1), "Uniform.high"),
        (lambda: Uniform(-1, 1), "Uniform.low"),
        (lambda: Uniform(0, math.inf), "Uniform.high"),
        (lambda: Constant(-2), "Constant.value"),
        (lambda: LogNormal(0, 1), "LogNormal.median"),
        (lambda: LogNormal(10, -1), "LogNormal.sigma"),
        (lambda: LogNormal(10, 1, low=5, high=2), "LogNormal.high"),
    ],
)
def test_bad_distributions_are_refused(make: Callable[[], object], field: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(field)):
        make()


def test_lognormal_has_the_given_median_and_stays_within_its_bounds() -> None:
    rng = random.Random(3)
    dist = LogNormal(median=60, sigma=0.8, low=5, high=600)
    samples = sorted(dist.sample(rng) for _ in range(4001))
    assert samples[0] >= 5
    assert samples[-1] <= 600
    assert samples[2000] == pytest.approx(60, rel=0.08)


@settings(max_examples=60, deadline=None)
@given(
    sigma=st.floats(min_value=0, max_value=4),
    low=st.floats(min_value=0, max_value=100),
    width=st.floats(min_value=0, max_value=100),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_lognormal_samples_are_the_unclipped_draw_clipped_to_low_and_high(
    sigma: float, low: float, width: float, seed: int
) -> None:
    dist = LogNormal(median=20, sigma=sigma, low=low, high=low + width)
    rng, replay = random.Random(seed), random.Random(seed)
    for _ in range(20):
        u1 = 1.0 - replay.random()
        z = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * replay.random())
        unclipped = 20 * math.exp(sigma * z)
        assert dist.sample(rng) == min(max(unclipped, low), low + width)


def test_the_hash_stream_is_blake2b_of_the_seed_and_key_in_counter_mode() -> None:
    # the documented construction (stable across processes): block n is BLAKE2b-512 of
    # the whole key, followed by "#n" from the second block on; 8 draws per block
    from hashlib import blake2b

    from outdial.simulation.provider import _HashStream

    def block(data: bytes) -> list[float]:
        digest = blake2b(data, digest_size=64).digest()
        words = [int.from_bytes(digest[i : i + 8], "little") for i in range(0, 64, 8)]
        return [(w >> 11) * 2.0**-53 for w in words]

    key = b"+14155550123:2"
    expected = block(b"7:" + key) + block(b"7:" + key + b"#1") + block(b"7:" + key + b"#2")
    seeded = blake2b(b"7:", digest_size=64)
    stream = _HashStream(seeded, key)
    assert [stream.random() for _ in range(24)] == expected
    assert _HashStream(seeded, key).random() == expected[0]  # the seeded hasher is unchanged


def test_a_restarted_hash_stream_is_the_stream_of_its_new_key() -> None:
    # the provider keeps one stream and restarts it for each call: whatever was drawn
    # before (here, past the first block), the restarted stream is a fresh one's
    from hashlib import blake2b

    from outdial.simulation.provider import _HashStream

    seeded = blake2b(b"7:", digest_size=64)
    stream = _HashStream(seeded, b"+14155550123:1")
    for _ in range(11):
        stream.random()
    first = stream.restart(b"+14155550123:2")  # hands back its first draw
    fresh = _HashStream(seeded, b"+14155550123:2")
    assert [first] + [stream.random() for _ in range(20)] == [fresh.random() for _ in range(21)]


def test_a_numbers_fate_is_drawn_from_blake2b_of_the_seed_and_number() -> None:
    from hashlib import blake2b

    profile = SimulationProfile(invalid_number_rate=0.4, reachability=0.5)
    provider = SimulatedProvider(VirtualClock(START), profile, seed=11)
    for i in range(200):
        number = f"+1415555{i:04d}"
        digest = blake2b(f"11:n:{number}".encode(), digest_size=16).digest()
        invalid = (int.from_bytes(digest[:8], "little") >> 11) * 2.0**-53 < 0.4
        unreachable = (int.from_bytes(digest[8:], "little") >> 11) * 2.0**-53 >= 0.5
        expected = (
            CallOutcome.INVALID_NUMBER
            if invalid
            else CallOutcome.NO_ANSWER
            if unreachable
            else None
        )
        assert provider._number_fate(number) is expected


@settings(max_examples=60, deadline=None)
@given(
    low=st.floats(min_value=0, max_value=1e4),
    width=st.floats(min_value=0, max_value=1e4),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_uniform_samples_stay_between_low_and_high(low: float, width: float, seed: int) -> None:
    dist = Uniform(low, low + width)
    rng = random.Random(seed)
    for _ in range(20):
        assert low <= dist.sample(rng) <= low + width


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32), number=st.integers(0, 10**7))
def test_any_seed_and_number_give_a_final_event_with_a_known_outcome(
    seed: int, number: int
) -> None:
    clock, sim = provider(
        SimulationProfile(duplicate_rate=0.3, reorder_rate=0.3, progress_events=True), seed=seed
    )
    sim.place_call(dial(number))
    events = drain(clock, sim)
    finals = [e for e in events if e.final]
    assert 1 <= len(finals) <= 2
    assert finals[0].outcome in set(CallOutcome)
    progress = sorted(e.sequence or 0 for e in events if not e.final)
    assert progress == list(range(finals[0].sequence or 0))

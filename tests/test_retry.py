"""Behaviour of the retry policy: backoffs, attempt caps, decisions, windows, JSON."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import attrs
import pytest

from outdial.calendar import BusinessHours
from outdial.errors import (
    ConfigurationError,
    InvalidRetryPolicy,
    NaiveDatetimeError,
    UnknownTimeZone,
)
from outdial.outcomes import DEFAULT_RETRYABLE_OUTCOMES, CallOutcome
from outdial.recipient import RecipientStatus
from outdial.retry import (
    Backoff,
    DailyCap,
    DecorrelatedJitter,
    Exponential,
    Final,
    Fixed,
    Jitter,
    RetryAt,
    RetryDecision,
    RetryPolicy,
    RollingCap,
    land_in_window,
)

UTC = timezone.utc
NEW_YORK = ZoneInfo("America/New_York")
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

RETRYABLE = sorted(DEFAULT_RETRYABLE_OUTCOMES)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def expected_draw(seed: int) -> float:
    """The first number random.Random(seed) hands out, computed independently."""
    return random.Random(seed).random()


# -- Fixed ---------------------------------------------------------------------------


def test_fixed_waits_the_same_delay_for_every_retry() -> None:
    backoff = Fixed(timedelta(minutes=30))
    delays = {backoff.delay(n, None, None) for n in range(1, 20)}
    assert delays == {timedelta(minutes=30)}


def test_fixed_takes_the_delay_keyword_and_reads_back_as_interval() -> None:
    backoff = Fixed(delay=timedelta(seconds=90))
    assert backoff.interval == timedelta(seconds=90)
    assert backoff == Fixed(timedelta(seconds=90))
    assert repr(backoff) == "Fixed(delay=datetime.timedelta(seconds=90))"


# -- Exponential ---------------------------------------------------------------------


def test_exponential_doubles_from_base_until_the_cap() -> None:
    backoff = Exponential(base=MINUTE, cap=timedelta(minutes=10))
    delays = [backoff.delay(n, None, None) for n in range(1, 7)]
    assert delays == [
        timedelta(minutes=1),
        timedelta(minutes=2),
        timedelta(minutes=4),
        timedelta(minutes=8),
        timedelta(minutes=10),
        timedelta(minutes=10),
    ]


def test_exponential_uses_its_multiplier() -> None:
    backoff = Exponential(base=timedelta(seconds=10), cap=DAY, multiplier=3)
    assert [backoff.delay(n, None, None) for n in (1, 2, 3)] == [
        timedelta(seconds=10),
        timedelta(seconds=30),
        timedelta(seconds=90),
    ]


def test_exponential_with_a_huge_retry_number_waits_the_cap_without_overflowing() -> None:
    backoff = Exponential(base=MINUTE, cap=HOUR, multiplier=10)
    assert backoff.delay(10**6, None, None) == HOUR


def test_full_jitter_waits_uniformly_below_the_ceiling() -> None:
    backoff = Exponential(base=MINUTE, cap=HOUR, jitter=Jitter.FULL)
    for seed, n in [(1, 1), (2, 3), (3, 5), (4, 9)]:
        v = min(HOUR, MINUTE * 2 ** (n - 1))
        got = backoff.delay(n, None, random.Random(seed))
        assert got == v * expected_draw(seed)
        assert timedelta(0) <= got <= v


def test_equal_jitter_waits_half_the_ceiling_plus_a_uniform_half() -> None:
    backoff = Exponential(base=MINUTE, cap=HOUR, jitter="equal")
    assert backoff.jitter is Jitter.EQUAL
    for seed, n in [(5, 1), (6, 2), (7, 4), (8, 12)]:
        v = min(HOUR, MINUTE * 2 ** (n - 1))
        got = backoff.delay(n, None, random.Random(seed))
        assert abs(got - (v / 2 + (v / 2) * expected_draw(seed))) <= timedelta(microseconds=1)
        assert v / 2 <= got <= v


def test_the_same_seed_gives_the_same_jittered_delays() -> None:
    backoff = Exponential(base=MINUTE, cap=HOUR, jitter=Jitter.FULL)
    first = [backoff.delay(n, None, rng) for rng in [random.Random(42)] for n in range(1, 8)]
    again = [backoff.delay(n, None, rng) for rng in [random.Random(42)] for n in range(1, 8)]
    other = [backoff.delay(n, None, rng) for rng in [random.Random(43)] for n in range(1, 8)]
    assert first == again
    assert first != other


# -- DecorrelatedJitter --------------------------------------------------------------------


def test_decorrelated_jitter_draws_between_base_and_three_times_the_previous_delay() -> None:
    backoff = DecorrelatedJitter(base=timedelta(seconds=10), cap=HOUR)
    previous = timedelta(minutes=5)
    got = backoff.delay(4, previous, random.Random(11))
    low, high = timedelta(seconds=10), 3 * previous
    assert abs(got - (low + (high - low) * expected_draw(11))) <= timedelta(microseconds=1)


def test_decorrelated_jitter_starts_from_base_when_there_is_no_previous_delay() -> None:
    backoff = DecorrelatedJitter(base=timedelta(seconds=10), cap=HOUR)
    got = backoff.delay(1, None, random.Random(12))
    low, high = timedelta(seconds=10), timedelta(seconds=30)
    assert abs(got - (low + (high - low) * expected_draw(12))) <= timedelta(microseconds=1)


def test_decorrelated_jitter_is_capped() -> None:
    backoff = DecorrelatedJitter(base=timedelta(seconds=10), cap=timedelta(minutes=1))
    delays = {backoff.delay(2, timedelta(days=30), random.Random(seed)) for seed in range(20)}
    assert delays == {timedelta(minutes=1)}


def test_decorrelated_jitter_never_goes_below_base_after_a_tiny_previous_delay() -> None:
    backoff = DecorrelatedJitter(base=timedelta(seconds=10), cap=HOUR)
    got = backoff.delay(2, timedelta(seconds=1), random.Random(3))
    assert got == timedelta(seconds=10)


@pytest.mark.parametrize(
    "backoff",
    [
        Exponential(base=MINUTE, cap=HOUR, jitter=Jitter.FULL),
        Exponential(base=MINUTE, cap=HOUR, jitter=Jitter.EQUAL),
        DecorrelatedJitter(base=MINUTE, cap=HOUR),
    ],
)
def test_jitter_without_an_injected_random_source_is_refused(backoff: Any) -> None:
    with pytest.raises(ConfigurationError) as raised:
        backoff.delay(1, None, None)
    assert raised.value.field == "rng"
    assert "random source" in str(raised.value)


def test_exponential_without_jitter_needs_no_random_source() -> None:
    assert Exponential(base=MINUTE, cap=HOUR).delay(2, None, None) == 2 * MINUTE


@pytest.mark.parametrize("backoff", [Fixed(MINUTE), Exponential(MINUTE, HOUR)])
@pytest.mark.parametrize("retry_number", [0, -1])
def test_retry_numbers_start_at_one(backoff: Any, retry_number: int) -> None:
    with pytest.raises(ConfigurationError, match="retry_number"):
        backoff.delay(retry_number, None, None)


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Fixed(timedelta(0)), "delay"),
        (lambda: Fixed(-MINUTE), "delay"),
        (lambda: Fixed(30), "delay"),  # type: ignore[arg-type]
        (lambda: Exponential(base=timedelta(0), cap=HOUR), "base"),
        (lambda: Exponential(base=HOUR, cap=MINUTE), "cap"),
        (lambda: Exponential(base=MINUTE, cap=HOUR, multiplier=0.5), "multiplier"),
        (lambda: Exponential(base=MINUTE, cap=HOUR, multiplier=float("nan")), "multiplier"),
        (lambda: Exponential(base=MINUTE, cap=HOUR, multiplier="2"), "multiplier"),  # type: ignore[arg-type]
        (lambda: Exponential(base=MINUTE, cap=HOUR, jitter="half"), "jitter"),
        (lambda: DecorrelatedJitter(base=-MINUTE, cap=HOUR), "base"),
        (lambda: DecorrelatedJitter(base=HOUR, cap=MINUTE), "cap"),
        (lambda: RollingCap(0, DAY), "max_attempts"),
        (lambda: RollingCap(3, timedelta(0)), "window"),
        (lambda: DailyCap(0), "max_attempts"),
        (lambda: DailyCap(True), "max_attempts"),
    ],
)
def test_invalid_backoffs_and_caps_are_refused_naming_the_field(build: Any, field: str) -> None:
    with pytest.raises(InvalidRetryPolicy) as raised:
        build()
    assert raised.value.field == field


def test_an_exponential_cap_shorter_than_base_says_so() -> None:
    with pytest.raises(InvalidRetryPolicy, match=r"cap: .* must not be shorter than base \(1h\)"):
        Exponential(base=HOUR, cap=MINUTE)


# -- RollingCap ------------------------------------------------------------------------------


def test_rolling_cap_allows_attempts_until_it_is_full() -> None:
    cap = RollingCap(max_attempts=3, window=DAY)
    attempts = [utc(2026, 5, 4, 9), utc(2026, 5, 4, 10)]
    assert cap.earliest_allowed(attempts, utc(2026, 5, 4, 11)) is None


def test_rolling_cap_of_three_per_day_frees_up_when_the_oldest_attempt_leaves_the_window() -> None:
    cap = RollingCap(max_attempts=3, window=DAY)
    attempts = [utc(2026, 5, 4, 9), utc(2026, 5, 4, 10), utc(2026, 5, 4, 11)]
    assert cap.earliest_allowed(attempts, utc(2026, 5, 4, 12)) == utc(2026, 5, 5, 9)
    assert cap.earliest_allowed(attempts, utc(2026, 5, 5, 9)) is None


def test_rolling_cap_only_counts_the_most_recent_attempts() -> None:
    cap = RollingCap(max_attempts=2, window=DAY)
    # Given out of order; the two most recent are 06-01 08:00 and 12:00.
    attempts = [utc(2026, 6, 1, 12), utc(2026, 5, 1, 9), utc(2026, 6, 1, 8)]
    assert cap.earliest_allowed(attempts, utc(2026, 6, 1, 13)) == utc(2026, 6, 2, 8)


def test_rolling_cap_compares_instants_not_wall_clocks() -> None:
    cap = RollingCap(max_attempts=1, window=HOUR)
    # 09:00 in New York is 13:00 UTC (EDT).
    attempt = datetime(2026, 6, 1, 9, tzinfo=NEW_YORK)
    assert cap.earliest_allowed([attempt], utc(2026, 6, 1, 13, 30)) == utc(2026, 6, 1, 14)


# -- DailyCap ------------------------------------------------------------------------------


def test_daily_cap_allows_attempts_until_the_local_day_is_full() -> None:
    cap = DailyCap(max_attempts=2, timezone="Europe/Paris")
    attempts = [utc(2026, 5, 4, 8)]
    assert cap.earliest_allowed(attempts, utc(2026, 5, 4, 9)) is None


def test_daily_cap_pushes_to_the_next_local_midnight() -> None:
    cap = DailyCap(max_attempts=2, timezone="Europe/Paris")
    attempts = [utc(2026, 5, 4, 8), utc(2026, 5, 4, 12)]
    # Paris is UTC+2 in May: midnight of 5 May is 4 May 22:00 UTC.
    assert cap.earliest_allowed(attempts, utc(2026, 5, 4, 13)) == utc(2026, 5, 4, 22)
    assert cap.earliest_allowed(attempts, utc(2026, 5, 4, 22)) is None


def test_daily_cap_pushes_to_next_local_midnight_across_a_spring_forward_change() -> None:
    cap = DailyCap(max_attempts=1, timezone="America/New_York")
    # 2026-03-08 is a 23 hour day in New York: it starts at 05:00Z (EST) and the
    # next one starts at 04:00Z (EDT), not 24 hours later.
    attempts = [datetime(2026, 3, 8, 10, tzinfo=NEW_YORK)]
    now = datetime(2026, 3, 8, 18, tzinfo=NEW_YORK)
    assert cap.earliest_allowed(attempts, now) == utc(2026, 3, 9, 4)


def test_daily_cap_pushes_to_next_local_midnight_across_a_fall_back_change() -> None:
    cap = DailyCap(max_attempts=1, timezone="America/New_York")
    # 2026-11-01 lasts 25 hours: it starts at 04:00Z (EDT), the next day at 05:00Z (EST).
    attempts = [datetime(2026, 11, 1, 10, tzinfo=NEW_YORK)]
    now = datetime(2026, 11, 1, 23, 30, tzinfo=NEW_YORK)
    assert cap.earliest_allowed(attempts, now) == utc(2026, 11, 2, 5)


def test_daily_cap_next_day_starts_at_one_when_local_midnight_does_not_exist() -> None:
    cap = DailyCap(max_attempts=1, timezone="America/Santiago")
    # Santiago skips 2026-09-06 00:00-01:00: the day starts at 01:00 -03 = 04:00Z.
    attempts = [utc(2026, 9, 5, 15)]
    moved = cap.earliest_allowed(attempts, utc(2026, 9, 5, 20))
    assert moved == utc(2026, 9, 6, 4)
    assert moved is not None
    assert moved.astimezone(ZoneInfo("America/Santiago")).time() == time(1, 0)


def test_daily_cap_counts_attempts_on_the_local_date_not_the_utc_date() -> None:
    cap = DailyCap(max_attempts=1, timezone="America/Los_Angeles")
    # 2026-03-10 06:00Z is still 9 March (23:00 PDT) in Los Angeles.
    attempts = [utc(2026, 3, 10, 6)]
    assert cap.earliest_allowed(attempts, utc(2026, 3, 10, 8)) is None
    assert cap.earliest_allowed(attempts, utc(2026, 3, 10, 6, 30)) == utc(2026, 3, 10, 7)


def test_daily_cap_refuses_an_unknown_time_zone() -> None:
    with pytest.raises(UnknownTimeZone) as raised:
        DailyCap(max_attempts=2, timezone="Mars/Olympus_Mons")
    assert raised.value.field == "timezone"


@pytest.mark.parametrize("cap", [RollingCap(2, DAY), DailyCap(2)])
def test_caps_refuse_naive_datetimes(cap: Any) -> None:
    with pytest.raises(NaiveDatetimeError):
        cap.earliest_allowed([utc(2026, 1, 1)], datetime(2026, 1, 1, 12))
    with pytest.raises(NaiveDatetimeError):
        cap.earliest_allowed([datetime(2026, 1, 1)], utc(2026, 1, 1, 12))


# -- RetryPolicy.decide ------------------------------------------------------------------------


START = utc(2026, 5, 4, 9)


def run_recipient(
    policy: RetryPolicy,
    outcomes: Sequence[CallOutcome],
    *,
    start: datetime = START,
    rng: random.Random | None = None,
) -> tuple[list[datetime], list[RetryDecision]]:
    """Dial one recipient, each attempt ending with the next outcome, until a Final."""
    attempts = [start]
    decisions: list[RetryDecision] = []
    previous: timedelta | None = None
    for outcome in outcomes:
        decision = policy.decide(
            outcome=outcome,
            attempts=attempts,
            ended_at=attempts[-1] + MINUTE,
            previous_delay=previous,
            rng=rng,
        )
        decisions.append(decision)
        if isinstance(decision, Final):
            break
        previous = decision.delay
        attempts.append(decision.at)
    return attempts, decisions


@pytest.mark.parametrize("mix", list(itertools.product(RETRYABLE, repeat=3)), ids=str)
def test_max_attempts_three_gives_exactly_two_retries_whatever_the_outcome_mix(
    mix: tuple[CallOutcome, ...],
) -> None:
    policy = RetryPolicy(
        max_attempts=3,
        outcome_backoff={CallOutcome.BUSY: Fixed(5 * MINUTE), CallOutcome.ERROR: Fixed(MINUTE)},
    )
    attempts, decisions = run_recipient(policy, [*mix, *mix])
    assert len(attempts) == 3
    assert [type(d) for d in decisions] == [RetryAt, RetryAt, Final]
    final = decisions[-1]
    assert isinstance(final, Final)
    assert "max attempts 3 reached" in final.reason


def test_one_shared_budget_not_one_per_outcome() -> None:
    # The peer bug: per-outcome budgets turned "1 retry" into one per outcome.
    policy = RetryPolicy(
        max_attempts=2,
        outcome_backoff={CallOutcome.BUSY: Fixed(MINUTE), CallOutcome.NO_ANSWER: Fixed(HOUR)},
    )
    _, decisions = run_recipient(policy, [CallOutcome.BUSY, CallOutcome.NO_ANSWER])
    assert isinstance(decisions[0], RetryAt)
    assert decisions[1] == Final(
        RecipientStatus.FAILED,
        CallOutcome.NO_ANSWER,
        "max attempts 2 reached (last outcome no_answer)",
    )


def test_max_attempts_one_never_retries() -> None:
    policy = RetryPolicy(max_attempts=1)
    decision = policy.decide(
        outcome=CallOutcome.BUSY, attempts=[utc(2026, 1, 5, 9)], ended_at=utc(2026, 1, 5, 9, 1)
    )
    assert isinstance(decision, Final)
    assert decision.status is RecipientStatus.FAILED


def decide_once(policy: RetryPolicy, outcome: CallOutcome, **kwargs: Any) -> RetryDecision:
    start = utc(2026, 5, 4, 9)
    kwargs.setdefault("attempts", [start])
    kwargs.setdefault("ended_at", start + MINUTE)
    return policy.decide(outcome=outcome, **kwargs)


def test_answered_completes_the_recipient() -> None:
    decision = decide_once(RetryPolicy(), CallOutcome.ANSWERED)
    assert decision == Final(
        RecipientStatus.COMPLETED, CallOutcome.ANSWERED, "answered: call connected, not retried"
    )


def test_opted_out_completes_the_recipient_and_is_never_retried() -> None:
    decision = decide_once(RetryPolicy(), CallOutcome.OPTED_OUT, retryable=True)
    assert isinstance(decision, Final)
    assert decision.status is RecipientStatus.COMPLETED
    assert decision.outcome is CallOutcome.OPTED_OUT


@pytest.mark.parametrize("outcome", [CallOutcome.INVALID_NUMBER, CallOutcome.DECLINED])
def test_hopeless_outcomes_fail_at_once_saying_they_are_not_retried(outcome: CallOutcome) -> None:
    decision = decide_once(RetryPolicy(max_attempts=10), outcome)
    assert decision == Final(RecipientStatus.FAILED, outcome, f"{outcome.value} is not retried")


def test_voicemail_is_retried_by_default() -> None:
    decision = decide_once(RetryPolicy(), CallOutcome.VOICEMAIL)
    assert isinstance(decision, RetryAt)


def test_voicemail_with_the_budget_spent_completes_because_it_connected() -> None:
    _, decisions = run_recipient(
        RetryPolicy(max_attempts=2), [CallOutcome.NO_ANSWER, CallOutcome.VOICEMAIL]
    )
    final = decisions[-1]
    assert isinstance(final, Final)
    assert final.status is RecipientStatus.COMPLETED
    assert final.outcome is CallOutcome.VOICEMAIL
    assert "max attempts 2 reached" in final.reason


def test_exhausted_failures_end_failed() -> None:
    _, decisions = run_recipient(
        RetryPolicy(max_attempts=2), [CallOutcome.VOICEMAIL, CallOutcome.ERROR]
    )
    assert decisions[-1] == Final(
        RecipientStatus.FAILED, CallOutcome.ERROR, "max attempts 2 reached (last outcome error)"
    )


def test_voicemail_not_in_retry_on_completes_at_once() -> None:
    policy = RetryPolicy(retry_on={CallOutcome.BUSY, CallOutcome.NO_ANSWER})
    decision = decide_once(policy, CallOutcome.VOICEMAIL)
    assert isinstance(decision, Final)
    assert decision.status is RecipientStatus.COMPLETED


def test_provider_saying_not_retryable_forces_a_final_decision() -> None:
    decision = decide_once(RetryPolicy(), CallOutcome.ERROR, retryable=False)
    assert decision == Final(
        RecipientStatus.FAILED, CallOutcome.ERROR, "error: provider says not retryable"
    )


def test_provider_saying_retryable_does_not_override_retry_on() -> None:
    policy = RetryPolicy(retry_on={CallOutcome.NO_ANSWER})
    decision = decide_once(policy, CallOutcome.ERROR, retryable=True)
    assert decision == Final(RecipientStatus.FAILED, CallOutcome.ERROR, "error is not retried")


def test_retry_waits_the_backoff_after_the_call_ended() -> None:
    decision = decide_once(RetryPolicy(backoff=Fixed(30 * MINUTE)), CallOutcome.NO_ANSWER)
    assert decision == RetryAt(
        at=utc(2026, 5, 4, 9, 31), delay=30 * MINUTE, reason="no_answer: retry 1 of 2 in 30min"
    )


def test_the_retry_number_is_the_number_of_attempts_so_far() -> None:
    policy = RetryPolicy(max_attempts=5, backoff=Exponential(base=MINUTE, cap=DAY))
    start = utc(2026, 5, 4, 9)
    attempts = [start - 3 * HOUR, start - 2 * HOUR, start]
    decision = policy.decide(outcome=CallOutcome.BUSY, attempts=attempts, ended_at=start + MINUTE)
    assert isinstance(decision, RetryAt)
    assert decision.delay == 4 * MINUTE  # third retry: base * 2**2
    assert "retry 3 of 4" in decision.reason


def test_outcome_backoff_overrides_the_default_for_that_outcome_only() -> None:
    policy = RetryPolicy(backoff=Fixed(HOUR), outcome_backoff={"busy": Fixed(5 * MINUTE)})
    busy = decide_once(policy, CallOutcome.BUSY)
    no_answer = decide_once(policy, CallOutcome.NO_ANSWER)
    assert isinstance(busy, RetryAt)
    assert isinstance(no_answer, RetryAt)
    assert (busy.delay, no_answer.delay) == (5 * MINUTE, HOUR)


def test_decorrelated_backoff_gets_the_previous_delay_and_the_random_source() -> None:
    backoff = DecorrelatedJitter(base=MINUTE, cap=DAY)
    policy = RetryPolicy(backoff=backoff)
    decision = decide_once(policy, CallOutcome.BUSY, previous_delay=HOUR, rng=random.Random(9))
    assert isinstance(decision, RetryAt)
    assert decision.delay == backoff.delay(1, HOUR, random.Random(9))
    assert decision.delay > 3 * MINUTE  # drawn up to 3 h, not up to 3 min


def test_a_jittered_policy_without_a_random_source_is_refused() -> None:
    policy = RetryPolicy(backoff=Exponential(MINUTE, HOUR, jitter=Jitter.FULL))
    with pytest.raises(ConfigurationError) as raised:
        decide_once(policy, CallOutcome.BUSY)
    assert raised.value.field == "rng"


def test_retry_after_raises_the_delay_when_honoured() -> None:
    decision = decide_once(
        RetryPolicy(backoff=Fixed(MINUTE)), CallOutcome.ERROR, retry_after=10 * MINUTE
    )
    assert isinstance(decision, RetryAt)
    assert decision.delay == 10 * MINUTE
    assert decision.at == utc(2026, 5, 4, 9, 11)
    assert "Retry-After 10min" in decision.reason


def test_a_shorter_retry_after_does_not_shorten_the_backoff() -> None:
    decision = decide_once(RetryPolicy(backoff=Fixed(HOUR)), CallOutcome.ERROR, retry_after=MINUTE)
    assert isinstance(decision, RetryAt)
    assert decision.delay == HOUR
    assert "Retry-After" not in decision.reason


def test_retry_after_is_ignored_when_not_honoured() -> None:
    policy = RetryPolicy(backoff=Fixed(MINUTE), honour_retry_after=False)
    decision = decide_once(policy, CallOutcome.ERROR, retry_after=10 * MINUTE)
    assert isinstance(decision, RetryAt)
    assert decision.delay == MINUTE


def test_rolling_cap_of_three_per_day_pushes_the_retry_to_the_oldest_attempt_plus_a_day() -> None:
    policy = RetryPolicy(max_attempts=5, backoff=Fixed(30 * MINUTE), caps=(RollingCap(3, DAY),))
    attempts = [utc(2026, 5, 4, 9), utc(2026, 5, 4, 10), utc(2026, 5, 4, 11)]
    decision = policy.decide(
        outcome=CallOutcome.NO_ANSWER, attempts=attempts, ended_at=utc(2026, 5, 4, 11, 1)
    )
    assert isinstance(decision, RetryAt)
    assert decision.at == utc(2026, 5, 5, 9)
    assert decision.delay == decision.at - utc(2026, 5, 4, 11, 1)
    assert "at most 3 attempts per 1d" in decision.reason


def test_a_rolling_cap_that_is_not_full_does_not_delay_the_retry() -> None:
    policy = RetryPolicy(max_attempts=5, backoff=Fixed(30 * MINUTE), caps=(RollingCap(3, DAY),))
    decision = decide_once(policy, CallOutcome.NO_ANSWER)
    assert isinstance(decision, RetryAt)
    assert decision.delay == 30 * MINUTE
    assert "held" not in decision.reason


def test_daily_cap_pushes_the_retry_to_the_next_local_midnight() -> None:
    policy = RetryPolicy(
        max_attempts=5, backoff=Fixed(MINUTE), caps=(DailyCap(2, "America/New_York"),)
    )
    attempts = [
        datetime(2026, 3, 8, 10, tzinfo=NEW_YORK),
        datetime(2026, 3, 8, 15, tzinfo=NEW_YORK),
    ]
    decision = policy.decide(
        outcome=CallOutcome.BUSY,
        attempts=attempts,
        ended_at=datetime(2026, 3, 8, 15, 2, tzinfo=NEW_YORK),
    )
    assert isinstance(decision, RetryAt)
    assert decision.at == datetime(2026, 3, 9, tzinfo=NEW_YORK)
    assert decision.at == utc(2026, 3, 9, 4)


def test_several_caps_are_all_respected() -> None:
    caps = (RollingCap(2, timedelta(hours=6)), DailyCap(3, "UTC"))
    policy = RetryPolicy(max_attempts=10, backoff=Fixed(MINUTE), caps=caps)
    attempts = [utc(2026, 5, 4, 1), utc(2026, 5, 4, 14), utc(2026, 5, 4, 20)]
    decision = policy.decide(
        outcome=CallOutcome.BUSY, attempts=attempts, ended_at=utc(2026, 5, 4, 20, 1)
    )
    # The daily cap is full: midnight; the rolling cap then allows from 14:00 + 6 h = 20:00 already.
    assert isinstance(decision, RetryAt)
    assert decision.at == utc(2026, 5, 5, 0)
    for cap in caps:
        assert cap.earliest_allowed(attempts, decision.at) is None


def test_a_cap_can_push_past_another_caps_opening() -> None:
    caps = (DailyCap(1, "UTC"), RollingCap(2, timedelta(hours=30)))
    policy = RetryPolicy(max_attempts=10, backoff=Fixed(MINUTE), caps=caps)
    attempts = [utc(2026, 5, 3, 23), utc(2026, 5, 4, 12)]
    decision = policy.decide(
        outcome=CallOutcome.BUSY, attempts=attempts, ended_at=utc(2026, 5, 4, 12, 1)
    )
    # Daily: 5 May 00:00; rolling: 3 May 23:00 + 30 h = 5 May 05:00.
    assert isinstance(decision, RetryAt)
    assert decision.at == utc(2026, 5, 5, 5)


def test_delays_are_real_elapsed_time_across_a_dst_change() -> None:
    policy = RetryPolicy(backoff=Fixed(HOUR))
    ended = datetime(2026, 3, 8, 1, 30, tzinfo=NEW_YORK)  # EST, 06:30Z
    decision = policy.decide(outcome=CallOutcome.BUSY, attempts=[ended - MINUTE], ended_at=ended)
    assert isinstance(decision, RetryAt)
    assert decision.at == utc(2026, 3, 8, 7, 30)  # 03:30 EDT: one real hour later
    assert decision.at.tzinfo is UTC


def test_decide_refuses_naive_datetimes() -> None:
    naive = datetime(2026, 5, 4, 9)
    with pytest.raises(NaiveDatetimeError):
        RetryPolicy().decide(
            outcome=CallOutcome.BUSY, attempts=[utc(2026, 5, 4, 9)], ended_at=naive
        )
    with pytest.raises(NaiveDatetimeError):
        RetryPolicy().decide(
            outcome=CallOutcome.BUSY, attempts=[naive], ended_at=utc(2026, 5, 4, 9)
        )


def test_decide_needs_the_attempt_that_just_ended() -> None:
    with pytest.raises(ConfigurationError, match="attempts"):
        RetryPolicy().decide(outcome=CallOutcome.BUSY, attempts=[], ended_at=utc(2026, 5, 4, 9))


def test_policy_earliest_allowed_is_none_without_caps() -> None:
    attempts = [utc(2026, 5, 4, 9)] * 10
    assert RetryPolicy().earliest_allowed(attempts, utc(2026, 5, 4, 9, 5)) is None


def test_policy_earliest_allowed_asks_every_cap() -> None:
    policy = RetryPolicy(caps=(RollingCap(2, timedelta(hours=2)), DailyCap(2, "UTC")))
    attempts = [utc(2026, 5, 4, 22), utc(2026, 5, 4, 23)]
    assert policy.earliest_allowed(attempts, utc(2026, 5, 4, 23, 5)) == utc(2026, 5, 5, 0)
    assert policy.earliest_allowed(attempts, utc(2026, 5, 5, 0)) is None
    assert policy.earliest_allowed(attempts[:1], utc(2026, 5, 4, 22, 5)) is None


# -- RetryPolicy construction -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"max_attempts": "3"}, "max_attempts"),
        ({"retry_on": {CallOutcome.BUSY, CallOutcome.INVALID_NUMBER}}, "retry_on"),
        ({"retry_on": {CallOutcome.DECLINED}}, "retry_on"),
        ({"retry_on": {CallOutcome.OPTED_OUT}}, "retry_on"),
        ({"retry_on": {CallOutcome.ANSWERED}}, "retry_on"),
        ({"retry_on": {"busy", "engaged"}}, "retry_on"),
        ({"retry_on": "busy"}, "retry_on"),
        ({"backoff": timedelta(minutes=5)}, "backoff"),
        ({"outcome_backoff": {"busy": timedelta(minutes=5)}}, "outcome_backoff.busy"),
        ({"outcome_backoff": {"engaged": Fixed(MINUTE)}}, "outcome_backoff"),
        ({"caps": (RollingCap(3, DAY), 3)}, "caps[1]"),
        ({"honour_retry_after": "yes"}, "honour_retry_after"),
    ],
)
def test_invalid_policies_are_refused_naming_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRetryPolicy) as raised:
        RetryPolicy(**kwargs)
    assert raised.value.field == field


def test_retrying_opted_out_numbers_is_refused_with_a_clear_message() -> None:
    with pytest.raises(InvalidRetryPolicy, match="retry_on: 'opted_out' is never retried"):
        RetryPolicy(retry_on={CallOutcome.BUSY, CallOutcome.OPTED_OUT})


def test_policies_are_equal_and_hashable_by_value() -> None:
    one = RetryPolicy(outcome_backoff={"busy": Fixed(MINUTE)}, caps=[RollingCap(3, DAY)])
    two = RetryPolicy(outcome_backoff={CallOutcome.BUSY: Fixed(MINUTE)}, caps=(RollingCap(3, DAY),))
    assert one == two
    assert hash(one) == hash(two)
    assert one != attrs.evolve(two, max_attempts=4)


def test_the_per_outcome_backoffs_cannot_be_changed_behind_the_policys_back() -> None:
    source: dict[CallOutcome, Any] = {CallOutcome.BUSY: Fixed(MINUTE)}
    policy = RetryPolicy(outcome_backoff=source)
    source[CallOutcome.BUSY] = Fixed(HOUR)
    assert policy.outcome_backoff[CallOutcome.BUSY] == Fixed(MINUTE)
    with pytest.raises(TypeError):
        policy.outcome_backoff[CallOutcome.BUSY] = Fixed(HOUR)  # type: ignore[index]


# -- land_in_window ---------------------------------------------------------------------------


def new_york_office_hours(**kwargs: Any) -> BusinessHours:
    return BusinessHours.weekly("America/New_York", {"mon-fri": [("09:00", "17:00")]}, **kwargs)


def test_retry_lands_in_next_business_window() -> None:
    calendar = new_york_office_hours()
    policy = RetryPolicy(backoff=Fixed(30 * MINUTE))
    friday_evening = datetime(2026, 3, 6, 16, 50, tzinfo=NEW_YORK)
    decision = policy.decide(
        outcome=CallOutcome.NO_ANSWER, attempts=[friday_evening], ended_at=friday_evening + MINUTE
    )
    assert isinstance(decision, RetryAt)
    assert decision.at == datetime(2026, 3, 6, 17, 21, tzinfo=NEW_YORK)

    landed = land_in_window(decision, calendar)

    monday_nine = datetime(2026, 3, 9, 9, tzinfo=NEW_YORK)  # EDT since Sunday
    assert isinstance(landed, RetryAt)
    assert landed.at == monday_nine
    # Real elapsed time from Friday 16:51 EST (21:51Z) to Monday 09:00 EDT (13:00Z),
    # not the wall-clock difference (which would be an hour longer).
    assert landed.delay == timedelta(days=2, hours=15, minutes=9)
    assert landed.delay == landed.at - (friday_evening + MINUTE).astimezone(UTC)
    assert "moved to the next calling window" in landed.reason
    assert decision.reason in landed.reason


def test_retry_skips_a_blackout_monday_to_tuesday_morning() -> None:
    calendar = new_york_office_hours(blackout_dates=["2026-03-09"])
    decision = RetryAt(at=datetime(2026, 3, 6, 18, tzinfo=NEW_YORK), delay=HOUR, reason="busy")
    landed = land_in_window(decision, calendar)
    assert isinstance(landed, RetryAt)
    assert landed.at == datetime(2026, 3, 10, 9, tzinfo=NEW_YORK)
    assert landed.delay == HOUR + (landed.at - decision.at)


def test_a_retry_inside_the_window_is_unchanged() -> None:
    decision = RetryAt(at=datetime(2026, 3, 4, 11, tzinfo=NEW_YORK), delay=HOUR, reason="busy")
    assert land_in_window(decision, new_york_office_hours()) is decision


def test_a_retry_whose_calendar_never_opens_fails() -> None:
    decision = RetryAt(at=utc(2026, 3, 4, 11), delay=HOUR, reason="busy")
    assert land_in_window(decision, BusinessHours(timezone="UTC")) == Final(
        RecipientStatus.FAILED, None, "no permitted calling window"
    )


def test_a_final_decision_is_not_moved() -> None:
    final = Final(RecipientStatus.COMPLETED, CallOutcome.ANSWERED, "answered")
    assert land_in_window(final, BusinessHours(timezone="UTC")) is final


def test_a_retry_is_never_moved_earlier() -> None:
    @attrs.frozen
    class Backwards:
        def next_open(self, t: datetime) -> datetime | None:
            return t - DAY

    decision = RetryAt(at=utc(2026, 3, 4, 11), delay=HOUR, reason="busy")
    assert land_in_window(decision, Backwards()) is decision


def test_a_retry_held_by_a_cap_into_the_weekend_lands_on_monday_and_still_respects_it() -> None:
    cap = RollingCap(2, timedelta(days=3))
    policy = RetryPolicy(max_attempts=5, backoff=Fixed(MINUTE), caps=(cap,))
    attempts = [
        datetime(2026, 3, 5, 16, tzinfo=NEW_YORK),  # Thursday
        datetime(2026, 3, 6, 16, 30, tzinfo=NEW_YORK),  # Friday
    ]
    decision = policy.decide(
        outcome=CallOutcome.BUSY, attempts=attempts, ended_at=attempts[-1] + MINUTE
    )
    assert isinstance(decision, RetryAt)
    assert decision.at == utc(2026, 3, 8, 21)  # Thursday 21:00Z + 72 h: Sunday
    landed = land_in_window(decision, new_york_office_hours())
    assert isinstance(landed, RetryAt)
    assert landed.at == datetime(2026, 3, 9, 9, tzinfo=NEW_YORK)
    assert cap.earliest_allowed(attempts, landed.at) is None


# -- to_dict / from_dict ------------------------------------------------------------------------

FULL_POLICY: dict[str, Any] = {
    "max_attempts": 4,
    "retry_on": ["busy", "error", "no_answer"],
    "backoff": {
        "type": "exponential",
        "base_seconds": 60,
        "cap_seconds": 3600,
        "multiplier": 2.0,
        "jitter": "full",
    },
    "outcome_backoff": {
        "busy": {"type": "fixed", "seconds": 300},
        "error": {"type": "decorrelated", "base_seconds": 30, "cap_seconds": 1800},
    },
    "caps": [
        {"type": "rolling", "max_attempts": 3, "window_seconds": 86400},
        {"type": "daily", "max_attempts": 2, "timezone": "Europe/Paris"},
    ],
    "honour_retry_after": False,
}


def test_a_policy_round_trips_through_json() -> None:
    policy = RetryPolicy.from_dict(json.loads(json.dumps(FULL_POLICY)))
    per_outcome: dict[CallOutcome, Backoff] = {
        CallOutcome.BUSY: Fixed(5 * MINUTE),
        CallOutcome.ERROR: DecorrelatedJitter(base=timedelta(seconds=30), cap=30 * MINUTE),
    }
    assert policy == RetryPolicy(
        max_attempts=4,
        retry_on={CallOutcome.BUSY, CallOutcome.ERROR, CallOutcome.NO_ANSWER},
        backoff=Exponential(base=MINUTE, cap=HOUR, multiplier=2, jitter=Jitter.FULL),
        outcome_backoff=per_outcome,
        caps=(RollingCap(3, DAY), DailyCap(2, "Europe/Paris")),
        honour_retry_after=False,
    )
    assert policy.to_dict() == FULL_POLICY
    assert RetryPolicy.from_dict(json.loads(json.dumps(policy.to_dict()))) == policy


def test_the_default_policy_serialises_to_its_json_shape() -> None:
    assert RetryPolicy().to_dict() == {
        "max_attempts": 3,
        "retry_on": ["busy", "error", "no_answer", "voicemail"],
        "backoff": {"type": "fixed", "seconds": 1800},
        "outcome_backoff": {},
        "caps": [],
        "honour_retry_after": True,
    }
    assert RetryPolicy.from_dict({}) == RetryPolicy()


def test_fractional_seconds_and_default_fields_survive_a_round_trip() -> None:
    data = {
        "backoff": {"type": "exponential", "base_seconds": 1.5, "cap_seconds": 90},
        "caps": [{"type": "daily", "max_attempts": 1}],
    }
    policy = RetryPolicy.from_dict(data)
    assert policy.backoff == Exponential(base=timedelta(seconds=1.5), cap=timedelta(seconds=90))
    assert policy.caps == (DailyCap(1, "UTC"),)
    assert RetryPolicy.from_dict(policy.to_dict()) == policy


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"backoff": {"type": "exponential", "base_seconds": 60, "cap_seconds": -1}},
            "backoff.cap_seconds: -1 must be positive",
        ),
        (
            {"backoff": {"type": "exponential", "base_seconds": 60, "cap_seconds": 30}},
            "backoff.cap_seconds: 30 must not be shorter than base (1min)",
        ),
        (
            {
                "backoff": {
                    "type": "exponential",
                    "base_seconds": 60,
                    "cap_seconds": 90,
                    "multiplier": 0.5,
                }
            },
            "backoff.multiplier: 0.5 must be a finite number >= 1",
        ),
        (
            {
                "backoff": {
                    "type": "exponential",
                    "base_seconds": 60,
                    "cap_seconds": 90,
                    "jitter": "half",
                }
            },
            "backoff.jitter: 'half' is not one of none, full, equal",
        ),
        (
            {"backoff": {"type": "linear", "seconds": 60}},
            "backoff.type: 'linear' is not one of fixed, exponential, decorrelated",
        ),
        ({"backoff": {"seconds": 60}}, "backoff.type: None is required"),
        ({"backoff": {"type": "fixed"}}, "backoff.seconds: None is required"),
        (
            {"backoff": {"type": "fixed", "seconds": "60"}},
            "backoff.seconds: '60' must be a finite number",
        ),
        (
            {"backoff": {"type": "fixed", "seconds": 60, "jitter": "full"}},
            "backoff.jitter: 'full' is not a field of a fixed backoff",
        ),
        ({"backoff": "fixed"}, "backoff: 'fixed' must be an object"),
        (
            {"outcome_backoff": {"busy": {"type": "fixed", "seconds": 0}}},
            "outcome_backoff.busy.seconds: 0 must be positive",
        ),
        (
            {"outcome_backoff": {"engaged": {"type": "fixed", "seconds": 5}}},
            "outcome_backoff.engaged: 'engaged' is not a call outcome",
        ),
        (
            {
                "caps": [
                    {"type": "rolling", "max_attempts": 3, "window_seconds": 86400},
                    {"type": "daily", "max_attempts": 2, "timezone": "Mars/Base"},
                ]
            },
            "caps[1].timezone: 'Mars/Base' is not a known IANA time zone",
        ),
        (
            {"caps": [{"type": "rolling", "max_attempts": 0, "window_seconds": 60}]},
            "caps[0].max_attempts: 0 must be at least 1",
        ),
        (
            {"caps": [{"type": "rolling", "max_attempts": 3}]},
            "caps[0].window_seconds: None is required",
        ),
        (
            {"caps": {"type": "daily", "max_attempts": 1}},
            "caps: {'type': 'daily', 'max_attempts': 1} must be a list",
        ),
        ({"max_attempts": 0}, "max_attempts: 0 must be at least 1"),
        ({"max_attempts": 2.5}, "max_attempts: 2.5 must be an integer"),
        ({"max_attempts": True}, "max_attempts: True must be an integer"),
        ({"retry_on": ["busy", "declined"]}, "retry_on: 'declined' is never retried"),
        ({"retry_on": ["busy", "engaged"]}, "retry_on[1]: 'engaged' is not a call outcome"),
        ({"retry_on": "busy"}, "retry_on: 'busy' must be a list"),
        ({"honour_retry_after": "yes"}, "honour_retry_after: 'yes' must be true or false"),
        ({"max_attempt": 3}, "max_attempt: 3 is not a retry policy field"),
    ],
)
def test_bad_json_is_refused_naming_the_dotted_field_and_value(
    data: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRetryPolicy) as raised:
        RetryPolicy.from_dict(data)
    assert str(raised.value).startswith(message)
    assert raised.value.field == message.split(":", 1)[0]


def test_a_policy_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(InvalidRetryPolicy, match="must be an object"):
        RetryPolicy.from_dict([3])  # type: ignore[arg-type]


def test_a_custom_backoff_has_no_json_form() -> None:
    @attrs.frozen
    class Linear:
        step: timedelta

        def delay(self, retry_number: int, previous: timedelta | None, rng: Any) -> timedelta:
            return self.step * retry_number

    policy = RetryPolicy(backoff=Linear(MINUTE))
    decision = decide_once(
        policy, CallOutcome.BUSY, attempts=[utc(2026, 5, 4, 8), utc(2026, 5, 4, 9)]
    )
    assert isinstance(decision, RetryAt)
    assert decision.delay == 2 * MINUTE
    with pytest.raises(InvalidRetryPolicy) as raised:
        policy.to_dict()
    assert raised.value.field == "backoff"
    with pytest.raises(InvalidRetryPolicy) as raised:
        RetryPolicy(outcome_backoff={"busy": Linear(MINUTE)}).to_dict()
    assert raised.value.field == "outcome_backoff.busy"


def test_a_custom_cap_is_used_but_has_no_json_form() -> None:
    @attrs.frozen
    class NotOnDate:
        day: date

        def earliest_allowed(self, attempts: Sequence[datetime], now: datetime) -> datetime | None:
            if now.astimezone(UTC).date() == self.day:
                return datetime.combine(self.day + DAY, time(0), tzinfo=UTC)
            return None

    policy = RetryPolicy(backoff=Fixed(HOUR), caps=(NotOnDate(date(2026, 5, 5)),))
    decision = policy.decide(
        outcome=CallOutcome.BUSY, attempts=[utc(2026, 5, 4, 23)], ended_at=utc(2026, 5, 4, 23, 30)
    )
    assert isinstance(decision, RetryAt)
    assert decision.at == utc(2026, 5, 6)
    with pytest.raises(InvalidRetryPolicy) as raised:
        policy.to_dict()
    assert raised.value.field == "caps[0]"


def test_decide_reads_start_instants_in_any_zone_as_the_same_instants() -> None:
    policy = RetryPolicy(max_attempts=5, backoff=Fixed(MINUTE), caps=(DailyCap(2, "UTC"),))
    in_utc = (utc(2026, 5, 4, 9), utc(2026, 5, 4, 14))
    mixed = [in_utc[0], in_utc[1].astimezone(NEW_YORK)]
    ended = utc(2026, 5, 4, 14, 2)
    kept = policy.decide(outcome=CallOutcome.BUSY, attempts=in_utc, ended_at=ended)
    converted = policy.decide(outcome=CallOutcome.BUSY, attempts=mixed, ended_at=ended)
    assert kept == converted
    assert isinstance(kept, RetryAt)
    assert kept.at == utc(2026, 5, 5)  # the daily cap: two calls on the 4th

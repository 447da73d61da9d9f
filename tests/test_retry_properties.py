"""Properties of the retry policy that hold for every backoff, cap and outcome sequence."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from outdial.calendar import BusinessHours
from outdial.outcomes import DEFAULT_RETRYABLE_OUTCOMES, CallOutcome
from outdial.recipient import RecipientStatus
from outdial.retry import (
    AttemptCap,
    Backoff,
    DailyCap,
    DecorrelatedJitter,
    Exponential,
    Final,
    Fixed,
    Jitter,
    RetryAt,
    RetryPolicy,
    RollingCap,
    land_in_window,
)

UTC = timezone.utc
ZONES = ["UTC", "America/New_York", "Europe/London", "Australia/Lord_Howe", "America/Santiago"]
FAST = settings(max_examples=150, deadline=None)

durations = st.integers(min_value=1, max_value=7 * 86400).map(lambda s: timedelta(seconds=s))
small_durations = st.integers(min_value=1, max_value=3600).map(lambda s: timedelta(seconds=s))
instants = st.datetimes(
    min_value=datetime(2025, 1, 1),
    max_value=datetime(2028, 12, 31),
    timezones=st.sampled_from([UTC, *(ZoneInfo(z) for z in ZONES[1:])]),
)


@st.composite
def base_and_cap(draw: st.DrawFn) -> tuple[timedelta, timedelta]:
    base = draw(durations)
    extra = draw(st.integers(min_value=0, max_value=30 * 86400))
    return base, base + timedelta(seconds=extra)


@st.composite
def exponentials(draw: st.DrawFn) -> Exponential:
    base, cap = draw(base_and_cap())
    multiplier = draw(st.floats(min_value=1.0, max_value=10.0, allow_nan=False))
    return Exponential(base, cap, multiplier, draw(st.sampled_from(Jitter)))


@st.composite
def decorrelated(draw: st.DrawFn) -> DecorrelatedJitter:
    base, cap = draw(base_and_cap())
    return DecorrelatedJitter(base, cap)


backoffs: st.SearchStrategy[Backoff] = st.one_of(
    durations.map(Fixed), exponentials(), decorrelated()
)
caps: st.SearchStrategy[AttemptCap] = st.one_of(
    st.builds(
        RollingCap,
        st.integers(1, 4),
        st.integers(60, 3 * 86400).map(lambda s: timedelta(seconds=s)),
    ),
    st.builds(DailyCap, st.integers(1, 3), st.sampled_from(ZONES)),
)
retry_numbers = st.one_of(st.integers(1, 40), st.integers(1, 10**9))
previous_delays = st.none() | st.integers(0, 10**9).map(lambda s: timedelta(seconds=s))


def cap_of(backoff: Backoff) -> timedelta:
    if isinstance(backoff, Fixed):
        return backoff.interval
    assert isinstance(backoff, (Exponential, DecorrelatedJitter))
    return backoff.cap


@FAST
@given(backoffs, retry_numbers, previous_delays, st.integers(0, 2**32))
def test_delays_are_never_negative_and_never_exceed_the_cap(
    backoff: Backoff, retry_number: int, previous: timedelta | None, seed: int
) -> None:
    delay = backoff.delay(retry_number, previous, random.Random(seed))
    assert timedelta(0) <= delay <= cap_of(backoff)


@FAST
@given(decorrelated(), retry_numbers, previous_delays, st.integers(0, 2**32))
def test_decorrelated_jitter_stays_between_base_and_cap(
    backoff: DecorrelatedJitter, retry_number: int, previous: timedelta | None, seed: int
) -> None:
    delay = backoff.delay(retry_number, previous, random.Random(seed))
    assert backoff.base <= delay <= backoff.cap


@FAST
@given(exponentials(), st.integers(1, 60), st.integers(0, 2**32))
def test_jittered_exponential_delays_stay_under_the_unjittered_ceiling(
    backoff: Exponential, retry_number: int, seed: int
) -> None:
    ceiling = backoff.ceiling(retry_number)
    delay = backoff.delay(retry_number, None, random.Random(seed))
    low = ceiling / 2 if backoff.jitter is Jitter.EQUAL else timedelta(0)
    if backoff.jitter is Jitter.NONE:
        low = ceiling
    assert low - timedelta(microseconds=1) <= delay <= ceiling
    assert ceiling <= backoff.cap
    assert ceiling <= backoff.ceiling(retry_number + 1)  # never shrinks as retries go on


@st.composite
def policies(draw: st.DrawFn) -> RetryPolicy:
    retry_on = draw(st.frozensets(st.sampled_from(sorted(DEFAULT_RETRYABLE_OUTCOMES))))
    per_outcome = draw(
        st.dictionaries(
            st.sampled_from(sorted(retry_on) or [CallOutcome.BUSY]), backoffs, max_size=2
        )
    )
    return RetryPolicy(
        max_attempts=draw(st.integers(1, 6)),
        retry_on=retry_on,
        backoff=draw(backoffs),
        outcome_backoff=per_outcome,
        caps=tuple(draw(st.lists(caps, max_size=3))),
        honour_retry_after=draw(st.booleans()),
    )


@st.composite
def call_results(draw: st.DrawFn) -> tuple[CallOutcome, bool | None, timedelta | None, timedelta]:
    """One attempt's outcome, provider retryable flag, Retry-After and call length."""
    return (
        draw(st.sampled_from(CallOutcome)),
        draw(st.sampled_from([None, None, None, True, False])),
        draw(st.none() | small_durations),
        draw(st.integers(0, 900).map(lambda s: timedelta(seconds=s))),
    )


def allowed_by(cap: AttemptCap, attempts: Sequence[datetime], at: datetime) -> bool:
    return cap.earliest_allowed(attempts, at) is None


@settings(max_examples=150, deadline=None)
@given(
    policies(), instants, st.lists(call_results(), min_size=1, max_size=12), st.integers(0, 2**32)
)
def test_a_recipient_never_exceeds_the_budget_or_any_cap(
    policy: RetryPolicy,
    first: datetime,
    results: list[tuple[CallOutcome, bool | None, timedelta | None, timedelta]],
    seed: int,
) -> None:
    rng = random.Random(seed)
    attempts = [first]
    previous: timedelta | None = None
    final: Final | None = None
    for outcome, retryable, retry_after, length in results:
        ended_at = attempts[-1] + length
        decision = policy.decide(
            outcome=outcome,
            attempts=attempts,
            ended_at=ended_at,
            retryable=retryable,
            retry_after=retry_after,
            previous_delay=previous,
            rng=rng,
        )
        if isinstance(decision, Final):
            final = decision
            assert decision.status in (RecipientStatus.COMPLETED, RecipientStatus.FAILED)
            assert (decision.status is RecipientStatus.COMPLETED) == outcome.connected
            break
        assert isinstance(decision, RetryAt)
        assert outcome in policy.retry_on
        assert retryable is not False
        assert decision.at >= ended_at
        assert decision.delay == decision.at - ended_at
        if policy.honour_retry_after and retry_after is not None:
            assert decision.delay >= retry_after
        for cap in policy.caps:
            assert allowed_by(cap, attempts, decision.at)
        assert policy.earliest_allowed(attempts, decision.at) is None
        previous = decision.delay
        attempts.append(decision.at)
        assert len(attempts) <= policy.max_attempts
    assert len(attempts) <= policy.max_attempts
    if final is None:  # ran out of scripted results before the policy stopped
        assert len(attempts) == len(results) + 1
    # Replaying the history, every attempt after the first was allowed by every cap.
    for index in range(1, len(attempts)):
        for cap in policy.caps:
            assert allowed_by(cap, attempts[:index], attempts[index])


@settings(max_examples=60, deadline=None)
@given(
    policies(),
    st.lists(st.sampled_from(sorted(DEFAULT_RETRYABLE_OUTCOMES)), min_size=12, max_size=12),
)
def test_a_policy_that_retries_every_outcome_stops_exactly_at_max_attempts(
    policy: RetryPolicy, outcomes: list[CallOutcome]
) -> None:
    policy = RetryPolicy(
        max_attempts=policy.max_attempts,
        backoff=policy.backoff,
        caps=policy.caps,
    )
    attempts = [datetime(2026, 5, 4, 9, tzinfo=UTC)]
    rng = random.Random(0)
    for outcome in outcomes:
        decision = policy.decide(
            outcome=outcome,
            attempts=attempts,
            ended_at=attempts[-1] + timedelta(minutes=1),
            rng=rng,
        )
        if isinstance(decision, Final):
            assert "max attempts" in decision.reason
            break
        attempts.append(decision.at)
    assert len(attempts) == policy.max_attempts


@settings(max_examples=60, deadline=None)
@given(policies())
def test_every_serialisable_policy_round_trips(policy: RetryPolicy) -> None:
    assert RetryPolicy.from_dict(policy.to_dict()) == policy


@st.composite
def office_hours(draw: st.DrawFn) -> BusinessHours:
    opens = draw(st.integers(0, 22))
    closes = draw(st.integers(opens + 1, 24))
    days = draw(st.sampled_from(["mon-fri", "mon,wed", "sat", "daily", "tue-thu"]))
    return BusinessHours.weekly(
        draw(st.sampled_from(ZONES)), {days: [(f"{opens:02d}:00", f"{closes:02d}:00")]}
    )


@settings(max_examples=60, deadline=None)
@given(
    policies(),
    office_hours(),
    instants,
    st.sampled_from(sorted(DEFAULT_RETRYABLE_OUTCOMES)),
    st.integers(0, 2**32),
)
def test_a_landed_retry_is_inside_the_window_and_still_respects_every_cap(
    policy: RetryPolicy, calendar: BusinessHours, start: datetime, outcome: CallOutcome, seed: int
) -> None:
    attempts = [start - timedelta(hours=5), start - timedelta(hours=1), start][
        -policy.max_attempts :
    ]
    ended_at = start + timedelta(minutes=2)
    decision = policy.decide(
        outcome=outcome, attempts=attempts, ended_at=ended_at, rng=random.Random(seed)
    )
    landed = land_in_window(decision, calendar)
    if isinstance(decision, Final):
        assert landed is decision
        return
    assert isinstance(landed, RetryAt)
    assert landed.at >= decision.at >= ended_at
    assert landed.delay == landed.at - ended_at
    assert calendar.is_open(landed.at)
    for cap in policy.caps:
        assert allowed_by(cap, attempts, landed.at)

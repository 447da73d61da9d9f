"""When applying a call's final event needs the recipient's attempt history.

The dispatcher reads the history only when ``Engine.needs_history`` says so: an
outcome the retry policy never retries is decided the same without it. These tests
pin that down, and which earlier attempts count against the budget.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outdial.campaign import AgentSettings, Campaign, CampaignStatus
from outdial.dispatch import DialerCore
from outdial.engine import Effect, Engine
from outdial.outcomes import CallOutcome
from outdial.ports import CallEvent, CallStatus
from outdial.recipient import Attempt, AttemptStatus, Recipient, RecipientStatus
from outdial.retry import Final, Fixed, RetryAt, RetryPolicy
from outdial.testing import InMemoryRepository, InMemoryUnitOfWork

UTC = timezone.utc
NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
POLICY = RetryPolicy(max_attempts=3, backoff=Fixed(timedelta(minutes=10)))


def _campaign(policy: RetryPolicy = POLICY) -> Campaign:
    return Campaign(
        "c1",
        "w1",
        NOW - timedelta(days=1),
        name="Renewals",
        status=CampaignStatus.ACTIVE,
        agent=AgentSettings(provider="fake"),
        retry_policy=policy,
    )


def _attempt(number: int, **kw: object) -> Attempt:
    fields: dict[str, object] = {
        "id": f"a{number}",
        "campaign_id": "c1",
        "recipient_id": "r1",
        "workspace_id": "w1",
        "number": number,
        "phone": "+12125550001",
        "created_at": NOW - timedelta(hours=3 - number),
        "status": AttemptStatus.PLACED,
        "provider": "fake",
        "external_call_id": f"CA{number}",
    }
    fields.update(kw)
    return Attempt(**fields)  # type: ignore[arg-type]


def _calling(attempts: int) -> Recipient:
    return Recipient(
        "r1",
        "c1",
        "w1",
        "+12125550001",
        NOW - timedelta(days=1),
        seq=1,
        status=RecipientStatus.CALLING,
        attempts=attempts,
    )


def _ended(outcome: CallOutcome | None, retryable: bool | None = None) -> CallEvent:
    return CallEvent(
        "fake", CallStatus.ENDED, attempt_id="a2", outcome=outcome, retryable=retryable
    )


def _earlier(outcome: CallOutcome) -> Attempt:
    return _attempt(1, status=AttemptStatus.ENDED, outcome=outcome)


@settings(max_examples=60, deadline=None)
@given(
    outcome=st.sampled_from(CallOutcome),
    retryable=st.sampled_from([None, True, False]),
    max_attempts=st.integers(1, 4),
    attempts_so_far=st.lists(st.datetimes(timezones=st.just(UTC)), min_size=1, max_size=5),
)
def test_an_outcome_the_policy_may_not_retry_is_decided_whatever_the_attempts(
    outcome: CallOutcome,
    retryable: bool | None,
    max_attempts: int,
    attempts_so_far: list[datetime],
) -> None:
    policy = RetryPolicy(max_attempts=max_attempts, backoff=Fixed(timedelta(minutes=10)))

    def decide(starts: list[datetime]) -> RetryAt | Final:
        return policy.decide(outcome=outcome, attempts=starts, ended_at=NOW, retryable=retryable)

    if policy.may_retry(outcome, retryable=retryable):
        # the budget decides: the first attempt of a budget of two or more is retried
        assert isinstance(decide([NOW]), RetryAt) is (max_attempts > 1)
    else:
        assert isinstance(decide([NOW]), Final)
        assert decide(attempts_so_far) == decide([NOW])


def test_may_retry_follows_retry_on_and_the_providers_refusal() -> None:
    assert POLICY.may_retry(CallOutcome.NO_ANSWER)
    assert POLICY.may_retry(CallOutcome.BUSY, retryable=True)
    assert not POLICY.may_retry(CallOutcome.BUSY, retryable=False)
    assert not POLICY.may_retry(CallOutcome.ANSWERED)
    assert not POLICY.may_retry(CallOutcome.OPTED_OUT, retryable=True)
    assert RetryPolicy(retry_on=[]).may_retry(CallOutcome.NO_ANSWER) is False


@pytest.mark.parametrize(
    ("event", "needed"),
    [
        (_ended(CallOutcome.NO_ANSWER), True),
        (_ended(None), True),  # no outcome: an error, which the default policy retries
        (_ended(CallOutcome.ANSWERED), False),
        (_ended(CallOutcome.INVALID_NUMBER), False),
        (_ended(CallOutcome.BUSY, retryable=False), False),
        (CallEvent("fake", CallStatus.RINGING, attempt_id="a2"), False),
    ],
)
def test_only_a_final_event_the_policy_may_retry_needs_the_history(
    event: CallEvent, needed: bool
) -> None:
    assert Engine.needs_history(_campaign(), event) is needed


@settings(max_examples=40, deadline=None)
@given(
    outcome=st.sampled_from(CallOutcome),
    retryable=st.sampled_from([None, True, False]),
    earlier=st.sampled_from([CallOutcome.BUSY, CallOutcome.NO_ANSWER, CallOutcome.VOICEMAIL]),
)
def test_without_the_history_the_event_is_decided_the_same_when_it_is_not_needed(
    outcome: CallOutcome, retryable: bool | None, earlier: CallOutcome
) -> None:
    campaign = _campaign(RetryPolicy(max_attempts=2, backoff=Fixed(timedelta(minutes=10))))
    event = _ended(outcome, retryable)
    current = _attempt(2)
    history = [_earlier(earlier), current]
    with_history = Engine().on_event(NOW, campaign, current, _calling(2), event, history)
    without = Engine().on_event(NOW, campaign, current, _calling(2), event, ())
    if not Engine.needs_history(campaign, event):
        assert without == with_history
    else:
        # the earlier attempt spends the budget of two: the history is what says so
        assert with_history.recipient is not None and without.recipient is not None
        assert with_history.recipient.status is not RecipientStatus.PENDING
        assert without.recipient.status is RecipientStatus.PENDING


def test_calls_never_placed_and_test_calls_do_not_count_against_the_budget() -> None:
    current = _attempt(2, created_at=NOW - timedelta(minutes=5))
    never_placed = _attempt(1, id="a0", status=AttemptStatus.ENDED, outcome=None)
    test_call = _attempt(
        9, id="t1", test_call=True, status=AttemptStatus.ENDED, outcome=CallOutcome.BUSY
    )
    # the history holds an older version of the attempt itself: it counts once
    older_self = _attempt(2, created_at=NOW - timedelta(minutes=5), status=AttemptStatus.DIALING)
    history = [never_placed, test_call, older_self]
    d = Engine().on_event(
        NOW, _campaign(), current, _calling(2), _ended(CallOutcome.NO_ANSWER), history
    )
    assert d.effect is Effect.APPLIED and d.recipient is not None
    assert d.recipient.status is RecipientStatus.PENDING
    assert d.reason is not None and d.reason.startswith("no_answer: retry 1 of 2")
    counted = [never_placed, _attempt(1, status=AttemptStatus.ENDED, outcome=CallOutcome.BUSY)]
    d = Engine().on_event(
        NOW, _campaign(), current, _calling(2), _ended(CallOutcome.NO_ANSWER), counted
    )
    assert d.reason is not None and d.reason.startswith("no_answer: retry 2 of 2")


def test_the_dispatcher_reads_the_history_only_when_the_engine_needs_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads: list[str] = []
    attempts_for = InMemoryUnitOfWork.attempts_for

    def counting(uow: InMemoryUnitOfWork, recipient_id: str) -> list[Attempt]:
        reads.append(recipient_id)
        return attempts_for(uow, recipient_id)

    monkeypatch.setattr(InMemoryUnitOfWork, "attempts_for", counting)
    repo = InMemoryRepository()
    core = DialerCore(repo)
    with repo.transaction() as uow:
        uow.add_campaign(_campaign())
        uow.add_recipients([_calling(0)])
    for number, outcome in ((1, CallOutcome.NO_ANSWER), (2, CallOutcome.ANSWERED)):
        with repo.transaction() as uow:
            stored = uow.get_recipient("r1")
            uow.save_recipient(attrs.evolve(_calling(number), seq=stored.seq), stored)
            uow.add_attempt(_attempt(number, created_at=NOW - timedelta(minutes=10 - number)))
        event = CallEvent("fake", CallStatus.ENDED, attempt_id=f"a{number}", outcome=outcome)
        result = core.apply_event(NOW, event)
        assert result.effect is Effect.APPLIED
        assert result.recipient_status is (
            RecipientStatus.PENDING if number == 1 else RecipientStatus.COMPLETED
        )
    # the no-answer needed the history (a retry's budget), the answered call did not
    assert reads == ["r1"]

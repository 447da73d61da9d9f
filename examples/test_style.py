"""Test-style use: a whole campaign checked in milliseconds with the shipped fakes.

Run it with pytest (``python -m pytest examples/test_style.py``) or as a script.
Nothing here sleeps: the virtual clock jumps to whatever happens next.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from outdial import (
    AgentSettings,
    BusinessHours,
    CallOutcome,
    CampaignService,
    CampaignStatus,
    Dialer,
    RecipientStatus,
    RetryPolicy,
)
from outdial.retry import Fixed
from outdial.testing import FakeProvider, InMemoryRepository, VirtualClock

MONDAY_8AM_NEW_YORK = datetime(2026, 11, 23, 13, 0, tzinfo=timezone.utc)


def test_busy_number_is_retried_in_business_hours_then_answered() -> None:
    clock = VirtualClock(MONDAY_8AM_NEW_YORK)
    repo = InMemoryRepository()
    provider = FakeProvider(clock=clock, auto_complete_after=timedelta(seconds=40))
    provider.script("+12125550101", CallOutcome.BUSY, CallOutcome.ANSWERED)
    provider.script("+12125550102", CallOutcome.INVALID_NUMBER)

    service = CampaignService(repo, clock=clock, providers=provider)
    campaign = service.create(
        "acme",
        name="Renewals",
        agent=AgentSettings(provider="fake", prompt_template="Hi {first_name}"),
        business_hours=BusinessHours.weekly("America/New_York", {"mon-fri": [("09:00", "17:00")]}),
        retry_policy=RetryPolicy(max_attempts=3, backoff=Fixed(timedelta(hours=2))),
        concurrency_limit=2,
        recipients=[
            {"phone_number": "+12125550101", "first_name": "Ada"},
            {"phone_number": "+12125550102", "first_name": "Alan"},
        ],
    )
    service.start("acme", campaign.id)
    Dialer(repo, provider, clock=clock).run_until_idle()

    done = service.get("acme", campaign.id)
    assert done.campaign.status is CampaignStatus.COMPLETED
    assert done.stats.answered == 1 and done.stats.failed == 1
    first_calls = [c for c in provider.calls if c.to == "+12125550101"]
    assert [c.attempt_number for c in first_calls] == [1, 2]
    assert first_calls[0].prompt == "Hi Ada"
    # Nobody was called before 09:00 New York; the retry came two hours later.
    ada = service.list_recipients("acme", campaign.id, search="Ada").items[0]
    history = service.get_recipient("acme", ada.id).history
    assert [a.outcome for a in history] == [CallOutcome.BUSY, CallOutcome.ANSWERED]
    assert history[0].created_at == datetime(2026, 11, 23, 14, 0, tzinfo=timezone.utc)
    assert history[1].created_at - history[0].ended_at >= timedelta(hours=2)
    assert ada.status is RecipientStatus.COMPLETED


if __name__ == "__main__":
    test_busy_number_is_retried_in_business_hours_then_answered()
    print("ok: campaign completed as scripted")

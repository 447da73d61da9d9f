"""Whole campaigns through the runners on SQLite and PostgreSQL, invariants checked.

The same scenarios as ``tests/test_dialer.py`` (virtual time, the seeded
simulator), with a SQL repository: a campaign completes inside business hours,
the asyncio runner (which offloads the blocking repository to threads) ends
exactly where the sync one does, and where the in-memory repository does.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from invariants import all_attempts, all_recipients, check_campaign
from outdial import (
    AgentSettings,
    AsyncDialer,
    BusinessHours,
    CampaignService,
    CampaignStatus,
    Dialer,
    EventBus,
    RetryPolicy,
)
from outdial.campaign import Campaign
from outdial.ports import Repository
from outdial.recipient import AttemptStatus
from outdial.retry import Fixed
from outdial.simulation import SimulatedProvider, SimulationProfile, VirtualClock, sample_numbers
from outdial.sql import SqlRepository
from outdial.testing import InMemoryRepository
from test_dialer import CrashAfterRecording

UTC = timezone.utc
MONDAY_8AM_NY = datetime(2026, 11, 23, 13, 0, tzinfo=UTC)
NY_HOURS = BusinessHours.weekly("America/New_York", {"mon-fri": [("09:00", "17:00")]})

RepoFactory = Callable[[], Repository]


@pytest.fixture
def make_repo(open_repo: Callable[[], SqlRepository]) -> RepoFactory:
    """Opens repositories on one fresh database of each engine (``open_repo``)."""
    return open_repo


class Scenario:
    def __init__(
        self,
        repo: Repository,
        n: int,
        *,
        start: datetime = MONDAY_8AM_NY,
        profile: SimulationProfile | None = None,
        hours: BusinessHours | None = NY_HOURS,
        concurrency: int = 5,
        seed: int = 1,
        provider_name: str = "simulated",
        **fields: Any,
    ) -> None:
        self.repo = repo
        self.clock = VirtualClock(start)
        self.bus = EventBus()
        self.provider = SimulatedProvider(
            self.clock, profile or SimulationProfile(), seed=seed, name=provider_name
        )
        self.service = CampaignService(
            repo, clock=self.clock, events=self.bus, providers=self.provider
        )
        campaign = self.service.create(
            "w1",
            name="Scenario",
            agent=AgentSettings(provider="simulated", prompt_template="Hi {first_name}"),
            business_hours=hours,
            concurrency_limit=concurrency,
            recipients=[
                {"phone_number": p, "first_name": "X"} for p in sample_numbers(n, seed=seed)
            ],
            **fields,
        )
        self.service.start("w1", campaign.id)
        self.cid = campaign.id

    def dialer(self, **kwargs: object) -> Dialer:
        return Dialer(
            self.repo,
            self.provider,
            clock=self.clock,
            events=self.bus,
            rng=random.Random(1),
            **kwargs,  # type: ignore[arg-type]
        )

    def check(self, **kwargs: Any) -> Campaign:
        return check_campaign(
            self.repo, self.cid, now=self.clock.now(), events=list(self.bus.history), **kwargs
        )


def _ids(prefix: str) -> Callable[[], str]:
    """Deterministic ids (two runs may share one database: ``prefix`` tells them apart)."""
    counter = iter(range(10**9))
    return lambda: f"{prefix}{next(counter)}"


def test_campaign_runs_to_completion_within_business_hours(make_repo: RepoFactory) -> None:
    s = Scenario(
        make_repo(), 40, retry_policy=RetryPolicy(max_attempts=3, backoff=Fixed(timedelta(hours=3)))
    )
    summary = s.dialer().run_until_idle()
    campaign = s.check()
    assert campaign.status is CampaignStatus.COMPLETED
    assert campaign.counters.remaining == 0
    assert summary.calls_placed == campaign.counters.attempts
    assert s.provider.max_concurrent <= 5
    assert summary.virtual_duration > timedelta(hours=3)


def _run(repo: Repository, *, use_async: bool) -> tuple[object, ...]:
    # Two runs may share a database: each simulator numbers its calls from 1, so the
    # provider's name keeps their call ids apart (it changes nothing else).
    s = Scenario(repo, 30, seed=3, provider_name="simulated-async" if use_async else "simulated")
    if use_async:
        dialer = AsyncDialer(
            repo,
            s.provider.as_async(),
            clock=s.clock,
            events=s.bus,
            rng=random.Random(5),
            new_id=_ids("async-"),
        )
        asyncio.run(dialer.run_until_idle())
    else:
        s.dialer(new_id=_ids("sync-")).run_until_idle()
    campaign = s.check()
    return campaign.status, campaign.counters, s.clock.now()


def test_async_and_sync_dialers_end_where_the_in_memory_run_ends(make_repo: RepoFactory) -> None:
    expected = _run(InMemoryRepository(), use_async=False)
    assert _run(make_repo(), use_async=False) == expected
    assert _run(make_repo(), use_async=True) == expected


def test_duplicate_late_and_reordered_events_are_applied_once(make_repo: RepoFactory) -> None:
    s = Scenario(
        make_repo(),
        40,
        hours=None,
        profile=SimulationProfile(duplicate_rate=0.5, reorder_rate=0.5, progress_events=True),
    )
    s.dialer().run_until_idle()
    c = s.check()
    assert c.status is CampaignStatus.COMPLETED
    assert c.counters.attempts == s.provider.calls_placed


def test_unknown_fate_dials_are_reconciled_never_redialled_blindly(
    make_repo: RepoFactory,
) -> None:
    s = Scenario(
        make_repo(),
        30,
        hours=None,
        profile=SimulationProfile(unknown_fate_rate=0.3),
        retry_policy=RetryPolicy(max_attempts=3),
    )
    s.dialer().run_until_idle()
    c = s.check()
    assert c.status is CampaignStatus.COMPLETED
    assert s.provider.overlapping_calls == 0


def test_restart_after_a_crash_reconciles_instead_of_redialling(make_repo: RepoFactory) -> None:
    repo = make_repo()
    s = Scenario(repo, 10, hours=None, concurrency=2)
    crashing = CrashAfterRecording(s.provider, crash_on=3)
    first = Dialer(repo, crashing, clock=s.clock, events=s.bus, worker_id="w-a")
    with pytest.raises(KeyboardInterrupt):
        first.run_until_idle()
    # A new process: a new repository on the same database.
    again = make_repo()
    with again.transaction() as uow:
        dialing = [
            a
            for a in uow.unfinished_attempts(started_before=s.clock.now() + timedelta(1))
            if a.status is AttemptStatus.DIALING
        ]
    assert len(dialing) == 1
    Dialer(again, s.provider, clock=s.clock, events=s.bus, worker_id="w-a").run_until_idle()
    c = check_campaign(again, s.cid, now=s.clock.now(), events=list(s.bus.history))
    assert c.status is CampaignStatus.COMPLETED
    assert s.provider.overlapping_calls == 0
    with again.transaction() as uow:
        crashed = uow.get_attempt(dialing[0].id)
    assert crashed is not None and crashed.external_call_id is not None


def test_paused_campaign_places_no_calls_and_in_flight_calls_finish(
    make_repo: RepoFactory,
) -> None:
    s = Scenario(make_repo(), 20, hours=None, concurrency=5)
    dialer = s.dialer()
    dialer.tick()
    s.service.pause("w1", s.cid)
    placed_before = s.provider.calls_placed
    dialer.run_until_idle(until=s.clock.now() + timedelta(hours=5))
    assert s.provider.calls_placed == placed_before == 5
    c = s.check()
    assert c.status is CampaignStatus.PAUSED and c.counters.in_flight == 0
    s.service.resume("w1", s.cid)
    dialer.run_until_idle()
    assert s.check().status is CampaignStatus.COMPLETED


def test_opt_out_suppresses_the_number_in_every_campaign_of_the_workspace(
    make_repo: RepoFactory,
) -> None:
    profile = SimulationProfile(
        answer_rate=0.0,
        voicemail_rate=0.0,
        busy_rate=0.0,
        failed_rate=0.0,
        invalid_number_rate=0.0,
        opted_out_rate=1.0,
    )
    repo = make_repo()
    s = Scenario(repo, 3, hours=None, profile=profile)
    numbers = [r.phone for r in all_recipients(repo, s.cid)]
    other = s.service.create(
        "w1",
        name="Second",
        agent=AgentSettings(provider="simulated"),
        recipients=[{"phone_number": n} for n in numbers],
    )
    s.dialer().run_until_idle()
    s.service.start("w1", other.id)
    s.dialer().run_until_idle()
    second = check_campaign(repo, other.id, now=s.clock.now(), suppressed=numbers)
    assert second.counters.skipped == 3
    assert second.status is CampaignStatus.COMPLETED


def test_expiry_cancels_and_skips_what_is_pending(make_repo: RepoFactory) -> None:
    s = Scenario(
        make_repo(),
        20,
        hours=None,
        concurrency=1,
        expires_at=MONDAY_8AM_NY + timedelta(minutes=5),
    )
    s.dialer().run_until_idle()
    c = s.check()
    assert c.status is CampaignStatus.CANCELLED
    assert c.counters.skipped > 0 and c.counters.in_flight == 0
    attempts = all_attempts(s.repo, all_recipients(s.repo, s.cid))
    assert all(a.status is AttemptStatus.ENDED for lst in attempts.values() for a in lst)

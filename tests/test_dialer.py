"""Whole campaigns through the runners, in virtual time, with invariants checked."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import structlog.testing

from invariants import all_attempts, all_recipients, check_campaign
from outdial import (
    AgentSettings,
    AsyncDialer,
    BusinessHours,
    CallEnded,
    CallEvent,
    CallOutcome,
    CallPlaced,
    CallStatus,
    CampaignService,
    CampaignStatus,
    Dialer,
    Engine,
    EngineConfig,
    EventBus,
    RetryPolicy,
)
from outdial._async_face import AsyncFace
from outdial.dialer import RunSummary, _drops_debug
from outdial.dispatch import Claim, DialerCore, Placement
from outdial.errors import ProviderUnavailable, StaleClaim, StaleRead
from outdial.ports import DialRequest, PlacedCall, SystemClock
from outdial.recipient import AttemptStatus, RecipientStatus
from outdial.retry import Fixed
from outdial.simulation import SimulatedProvider, SimulationProfile, VirtualClock, sample_numbers
from outdial.testing import FakeProvider, InMemoryRepository

UTC = timezone.utc
MONDAY_8AM_NY = datetime(2026, 11, 23, 13, 0, tzinfo=UTC)
NY_HOURS = BusinessHours.weekly("America/New_York", {"mon-fri": [("09:00", "17:00")]})


def setup(
    n: int,
    *,
    start: datetime = MONDAY_8AM_NY,
    profile: SimulationProfile | None = None,
    hours: BusinessHours | None = NY_HOURS,
    concurrency: int = 5,
    seed: int = 1,
    **fields: Any,
) -> tuple[CampaignService, InMemoryRepository, VirtualClock, SimulatedProvider, EventBus, str]:
    clock = VirtualClock(start)
    repo = InMemoryRepository()
    bus = EventBus()
    provider = SimulatedProvider(clock, profile or SimulationProfile(), seed=seed)
    service = CampaignService(repo, clock=clock, events=bus, providers=provider)
    campaign = service.create(
        "w1",
        name="Scenario",
        agent=AgentSettings(provider="simulated", prompt_template="Hi {first_name}"),
        business_hours=hours,
        concurrency_limit=concurrency,
        recipients=[{"phone_number": p, "first_name": "X"} for p in sample_numbers(n, seed=seed)],
        **fields,
    )
    service.start("w1", campaign.id)
    return service, repo, clock, provider, bus, campaign.id


def test_campaign_runs_to_completion_within_business_hours() -> None:
    service, repo, clock, provider, bus, cid = setup(
        60, retry_policy=RetryPolicy(max_attempts=3, backoff=Fixed(timedelta(hours=3)))
    )
    summary = Dialer(repo, provider, clock=clock, events=bus, rng=random.Random(1)).run_until_idle()
    campaign = check_campaign(repo, cid, now=clock.now(), events=list(bus.history))
    assert campaign.status is CampaignStatus.COMPLETED
    assert campaign.counters.remaining == 0
    assert summary.calls_placed == campaign.counters.attempts
    assert provider.max_concurrent <= 5
    # retries three hours later land in the next window, never off-hours (checked above)
    assert summary.virtual_duration > timedelta(hours=3)


def test_async_dialer_gives_the_same_result_as_the_sync_one() -> None:
    results = []
    for use_async in (False, True):
        service, repo, clock, provider, bus, cid = setup(40, seed=3)
        if use_async:
            dialer = AsyncDialer(
                repo,
                provider.as_async(),
                clock=clock,
                events=bus,
                rng=random.Random(5),
                new_id=_ids(),
            )
            asyncio.run(dialer.run_until_idle())
        else:
            Dialer(
                repo, provider, clock=clock, events=bus, rng=random.Random(5), new_id=_ids()
            ).run_until_idle()
        campaign = check_campaign(repo, cid, now=clock.now(), events=list(bus.history))
        results.append((campaign.status, campaign.counters, clock.now()))
    assert results[0] == results[1]


def test_sync_and_async_runs_take_the_same_steps_with_faults_and_reconciles() -> None:
    """Both runners run one loop (``_Base._steps``): with provider errors, calls of
    unknown fate (reconciled later), progress events, duplicates and reordering,
    they take the same steps and decide the same calls, at the same instants."""
    profile = SimulationProfile(
        progress_events=True,
        duplicate_rate=0.1,
        reorder_rate=0.1,
        provider_error_rate=0.08,
        unknown_fate_rate=0.08,
    )
    runs = []
    for use_async in (False, True):
        service, repo, clock, provider, bus, cid = setup(
            50,
            seed=6,
            profile=profile,
            concurrency=4,
            retry_policy=RetryPolicy(max_attempts=3, backoff=Fixed(timedelta(minutes=20))),
        )
        kwargs: dict[str, Any] = {
            "clock": clock,
            "events": bus,
            "rng": random.Random(2),
            "new_id": _ids(),
            "reconcile_interval": timedelta(minutes=30),
            "worker_id": "worker-1",
        }
        with structlog.testing.capture_logs() as logs:
            if use_async:
                summary = asyncio.run(
                    AsyncDialer(repo, provider.as_async(), **kwargs).run_until_idle()
                )
            else:
                summary = Dialer(repo, provider, **kwargs).run_until_idle()
        campaign = check_campaign(repo, cid, now=clock.now(), events=list(bus.history))
        # what each runner logged (the same lines with the same fields, in any order
        # within a round: the async runner places a round's calls concurrently)
        logged = Counter(
            tuple(sorted((k, "the campaign" if v == cid else str(v)) for k, v in entry.items()))
            for entry in logs
        )
        runs.append((summary, campaign.status, campaign.counters, provider.call_log(), logged))
    assert runs[0] == runs[1]
    summary, logged = runs[0][0], runs[0][4]
    assert summary.ticks > 1 and summary.events_applied > summary.calls_placed > 50
    names = Counter(dict(line)["event"] for line in logged.elements())
    assert names["attempt_reconciled"] > 0 and names["place_call_failed"] > 0
    assert names["campaign_transition"] == 1  # completed
    assert names["call_placed"] == summary.calls_placed


@pytest.mark.parametrize("use_async", [False, True])
def test_a_real_clock_run_sleeps_until_the_next_event_and_wakes_for_a_webhook(
    use_async: bool,
) -> None:
    """``run_until_idle`` with the real clock: a webhook that ends a call wakes the
    sleeping loop at once (the next call is placed long before the call would have
    ended by itself); the last call is not ended by anyone, so the loop sleeps until
    the provider's event for its end is due, delivers it and returns."""
    clock = SystemClock()
    repo = InMemoryRepository()
    fake = FakeProvider("fake", clock=clock, auto_complete_after=timedelta(seconds=1))
    service = CampaignService(repo, clock=clock, providers=fake)
    campaign = service.create(
        "w1",
        name="live",
        agent=AgentSettings(provider="fake"),
        concurrency_limit=1,
        recipients=[{"phone_number": p} for p in sample_numbers(3, seed=4)],
    )
    service.start("w1", campaign.id)
    until = clock.now() + timedelta(seconds=30)
    t0 = time.perf_counter()

    def nth_call_placed(n: int) -> bool:
        return len(fake.calls) >= n or time.perf_counter() - t0 > 5

    if use_async:
        async_dialer = AsyncDialer(repo, fake.as_async(), clock=clock)

        async def end_two_calls() -> None:
            for n in (1, 2):
                while not nth_call_placed(n):
                    await asyncio.sleep(0.005)
                await async_dialer.submit(fake.end_call(fake.calls[-1].attempt_id))

        async def scenario() -> RunSummary:
            run = async_dialer.run_until_idle(until=until)
            summary, _ = await asyncio.gather(run, end_two_calls())
            return summary

        summary = asyncio.run(scenario())
    else:
        dialer = Dialer(repo, fake, clock=clock)

        def end_two_calls_sync() -> None:
            for n in (1, 2):
                while not nth_call_placed(n):
                    time.sleep(0.005)
                dialer.submit(fake.end_call(fake.calls[-1].attempt_id))

        helper = threading.Thread(target=end_two_calls_sync, daemon=True)
        helper.start()
        summary = dialer.run_until_idle(until=until)
        helper.join(5)
    elapsed = time.perf_counter() - t0
    assert service.get("w1", campaign.id).campaign.status is CampaignStatus.COMPLETED
    assert len(fake.calls) == summary.calls_placed == 3
    # two calls ended by webhook at once, the third by itself after a second. Had the
    # webhooks not woken the loop, it would have slept until each call's own end: 3 s
    # at least. The margin above 1 s is for a loaded machine.
    assert 0.95 < elapsed < 2.5


def test_a_round_cap_claims_in_batches_with_the_same_result() -> None:
    """``EngineConfig.max_dials_per_round`` makes a round claim fewer calls; the runner
    dispatches again at once, so the calls, their order and instants are unchanged."""
    outcomes = []
    for cap in (None, 2):
        service, repo, clock, provider, bus, cid = setup(
            30,
            concurrency=7,
            retry_policy=RetryPolicy(max_attempts=2, backoff=Fixed(timedelta(minutes=30))),
        )
        committed: list[int] = []
        dialer = Dialer(
            repo,
            provider,
            clock=clock,
            events=bus,
            rng=random.Random(5),
            new_id=_ids(),
            engine=Engine(EngineConfig(max_dials_per_round=cap)),
        )
        core_apply_plan = dialer.core.apply_plan

        def counting(*args: Any, _inner: Any = core_apply_plan, _seen: Any = committed) -> Any:
            claims = _inner(*args)
            _seen.append(len(claims))
            return claims

        dialer.core.apply_plan = counting  # type: ignore[method-assign,assignment]
        summary = dialer.run_until_idle()
        campaign = check_campaign(repo, cid, now=clock.now(), events=list(bus.history))
        log = [(c.number, c.placed_at, c.outcome) for c in provider.call_log()]
        outcomes.append((campaign.counters, clock.now(), summary.calls_placed, log))
        assert max(committed) == (7 if cap is None else cap)
        assert provider.max_concurrent <= 7
    assert outcomes[0] == outcomes[1]


def _ids() -> Callable[[], str]:  # deterministic attempt ids
    counter = iter(range(10**9))
    return lambda: f"id{next(counter)}"


def test_campaign_across_the_dst_change_keeps_local_hours() -> None:
    # Friday 2026-10-30; New York falls back on Sunday 2026-11-01.
    start = datetime(2026, 10, 30, 20, 0, tzinfo=UTC)  # 16:00 EDT
    service, repo, clock, provider, bus, cid = setup(
        80,
        start=start,
        concurrency=3,
        retry_policy=RetryPolicy(max_attempts=2, backoff=Fixed(timedelta(minutes=30))),
    )
    Dialer(repo, provider, clock=clock, events=bus, rng=random.Random(2)).run_until_idle()
    campaign = check_campaign(repo, cid, now=clock.now(), events=list(bus.history))
    assert campaign.status is CampaignStatus.COMPLETED
    recipients = all_recipients(repo, cid)
    starts = sorted(a.created_at for lst in all_attempts(repo, recipients).values() for a in lst)
    monday = [t for t in starts if t.date() == datetime(2026, 11, 2).date()]
    assert monday and min(monday) == datetime(2026, 11, 2, 14, 0, tzinfo=UTC)  # 09:00 EST


def test_overnight_window_across_midnight() -> None:
    hours = BusinessHours.weekly("America/New_York", {"mon": [("22:00", "02:00")]})
    start = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # Monday 21:00 New York
    service, repo, clock, provider, bus, cid = setup(
        150,
        start=start,
        hours=hours,
        concurrency=1,
        retry_policy=RetryPolicy(max_attempts=1),
    )
    Dialer(repo, provider, clock=clock, events=bus, rng=random.Random(2)).run_until_idle()
    check_campaign(repo, cid, now=clock.now(), events=list(bus.history))
    recipients = all_recipients(repo, cid)
    starts = [a.created_at for lst in all_attempts(repo, recipients).values() for a in lst]
    assert any(t.astimezone(hours.zone).hour < 2 for t in starts)  # after midnight counts
    assert all(t.astimezone(hours.zone).hour in (22, 23, 0, 1) for t in starts)


def test_paused_campaign_places_no_calls_and_in_flight_calls_finish() -> None:
    service, repo, clock, provider, bus, cid = setup(30, hours=None, concurrency=5)
    dialer = Dialer(repo, provider, clock=clock, events=bus, rng=random.Random(1))
    dialer.tick()
    service.pause("w1", cid)
    placed_before = provider.calls_placed
    dialer.run_until_idle(until=clock.now() + timedelta(hours=5))
    assert provider.calls_placed == placed_before == 5
    c = check_campaign(repo, cid, now=clock.now(), events=list(bus.history))
    assert c.status is CampaignStatus.PAUSED and c.counters.in_flight == 0
    service.resume("w1", cid)
    dialer.run_until_idle()
    c = check_campaign(repo, cid, now=clock.now(), events=list(bus.history))
    assert c.status is CampaignStatus.COMPLETED


def test_opt_out_suppresses_the_number_in_every_campaign_of_the_workspace() -> None:
    profile = SimulationProfile(
        answer_rate=0.0,
        voicemail_rate=0.0,
        busy_rate=0.0,
        failed_rate=0.0,
        invalid_number_rate=0.0,
        opted_out_rate=1.0,
    )
    service, repo, clock, provider, bus, cid = setup(3, hours=None, profile=profile)
    numbers = [r.phone for r in all_recipients(repo, cid)]
    other = service.create(
        "w1",
        name="Second",
        agent=AgentSettings(provider="simulated"),
        recipients=[{"phone_number": n} for n in numbers],
    )
    Dialer(repo, provider, clock=clock, events=bus, rng=random.Random(1)).run_until_idle()
    service.start("w1", other.id)
    Dialer(repo, provider, clock=clock, events=bus, rng=random.Random(1)).run_until_idle()
    second = check_campaign(repo, other.id, now=clock.now(), suppressed=numbers)
    assert second.counters.skipped == 3
    assert second.status is CampaignStatus.COMPLETED


def test_duplicate_late_and_reordered_events_are_applied_once() -> None:
    profile = SimulationProfile(duplicate_rate=0.5, reorder_rate=0.5, progress_events=True)
    service, repo, clock, provider, bus, cid = setup(60, hours=None, profile=profile)
    Dialer(repo, provider, clock=clock, events=bus, rng=random.Random(1)).run_until_idle()
    c = check_campaign(repo, cid, now=clock.now(), events=list(bus.history))
    assert c.status is CampaignStatus.COMPLETED
    assert c.counters.attempts == provider.calls_placed


def test_unknown_fate_dials_are_reconciled_never_redialled_blindly() -> None:
    profile = SimulationProfile(unknown_fate_rate=0.3)
    service, repo, clock, provider, bus, cid = setup(
        40, hours=None, profile=profile, retry_policy=RetryPolicy(max_attempts=3)
    )
    Dialer(repo, provider, clock=clock, events=bus, rng=random.Random(1)).run_until_idle()
    c = check_campaign(repo, cid, now=clock.now(), events=list(bus.history))
    assert c.status is CampaignStatus.COMPLETED
    assert provider.overlapping_calls == 0  # the provider never saw two live calls to one number


class _Wrapped:
    """A provider and event source that hands everything to a simulated provider;
    subclasses change what they test."""

    def __init__(self, inner: SimulatedProvider) -> None:
        self.inner = inner
        self.name = inner.name

    def place_call(self, request: DialRequest) -> PlacedCall:
        return self.inner.place_call(request)

    def cancel_call(self, external_call_id: str) -> None:
        self.inner.cancel_call(external_call_id)

    def fetch_call(self, *, attempt_id: str, external_call_id: str | None) -> CallEvent | None:
        return self.inner.fetch_call(attempt_id=attempt_id, external_call_id=external_call_id)

    def next_event_at(self) -> datetime | None:
        return self.inner.next_event_at()

    def due_events(self, now: datetime) -> list[CallEvent]:
        return self.inner.due_events(now)


class CrashAfterRecording(_Wrapped):
    """A provider whose process 'dies' after the attempt is recorded: place_call raises
    a BaseException the dialer does not catch, like a SIGKILL between commit and dial."""

    def __init__(self, inner: SimulatedProvider, crash_on: int) -> None:
        super().__init__(inner)
        self.crash_on = crash_on
        self.seen = 0

    def place_call(self, request: DialRequest) -> PlacedCall:
        self.seen += 1
        if self.seen == self.crash_on:
            self.inner.place_call(request)  # the provider got it...
            raise KeyboardInterrupt("process died")  # ...but we never heard back
        return self.inner.place_call(request)


def test_restart_after_a_crash_reconciles_instead_of_redialling() -> None:
    service, repo, clock, provider, bus, cid = setup(10, hours=None, concurrency=2)
    crashing = CrashAfterRecording(provider, crash_on=3)
    first = Dialer(repo, crashing, clock=clock, events=bus, worker_id="w-a")
    with pytest.raises(KeyboardInterrupt):
        first.run_until_idle()
    with repo.transaction() as uow:
        dialing = [
            a
            for a in uow.unfinished_attempts(started_before=clock.now() + timedelta(1))
            if a.status is AttemptStatus.DIALING
        ]
    assert len(dialing) == 1
    # restart with the same worker id: recovery asks the provider first
    second = Dialer(repo, provider, clock=clock, events=bus, worker_id="w-a")
    second.run_until_idle()
    c = check_campaign(repo, cid, now=clock.now(), events=list(bus.history))
    assert c.status is CampaignStatus.COMPLETED
    assert provider.overlapping_calls == 0
    with repo.transaction() as uow:
        crashed = uow.get_attempt(dialing[0].id)
    assert crashed is not None and crashed.external_call_id is not None  # learned from provider


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize(
    "lost",
    [
        StaleRead("recipient", "r", "is calling, not queued as the caller read it"),
        StaleClaim("a", 0),
    ],
    ids=["stale_read", "stale_claim"],
)
def test_a_reconcile_overtaken_by_another_write_is_logged_and_the_run_goes_on(
    use_async: bool, lost: Exception
) -> None:
    """A reconcile whose write loses a race with another worker's (the attempt taken
    over, its recipient moved in between) stores nothing and does not stop the runner:
    it logs ``reconcile_conflict`` and looks at the attempt again a second later, from
    what is stored then (never redialling it blindly), so the campaign still ends."""
    service, repo, clock, provider, bus, cid = setup(10, hours=None, concurrency=2)
    first = Dialer(repo, CrashAfterRecording(provider, crash_on=3), clock=clock, worker_id="w-a")
    with pytest.raises(KeyboardInterrupt):
        first.run_until_idle()
    runner: Dialer | AsyncDialer = (
        AsyncDialer(repo, provider.as_async(), clock=clock, events=bus, worker_id="w-a")
        if use_async
        else Dialer(repo, provider, clock=clock, events=bus, worker_id="w-a")
    )
    record = runner.core.record_reconcile
    looked_at: list[str] = []

    def overtaken(now: datetime, attempt_id: str, view: Any) -> Any:
        looked_at.append(attempt_id)
        if len(looked_at) == 1:
            raise lost
        return record(now, attempt_id, view)

    runner.core.record_reconcile = overtaken  # type: ignore[method-assign]
    with structlog.testing.capture_logs() as logs:
        if isinstance(runner, AsyncDialer):
            asyncio.run(runner.run_until_idle())
        else:
            runner.run_until_idle()
    conflicts = [line for line in logs if line["event"] == "reconcile_conflict"]
    assert conflicts == [
        {
            "event": "reconcile_conflict",
            "log_level": "info",
            "worker": "w-a",
            "attempt": looked_at[0],
            "error": str(lost),
        }
    ]
    assert looked_at.count(looked_at[0]) >= 2  # looked at again, and then reconciled
    c = check_campaign(repo, cid, now=clock.now(), events=list(bus.history))
    assert c.status is CampaignStatus.COMPLETED
    assert provider.overlapping_calls == 0


def test_long_running_dialer_is_event_driven() -> None:
    """With the real clock: a webhook that ends a call gets the next call placed at once."""
    repo = InMemoryRepository()
    events: list[DialRequest] = []
    placed = threading.Event()

    class Manual:
        name = "manual"

        def place_call(self, request: DialRequest) -> PlacedCall:
            events.append(request)
            placed.set()
            return PlacedCall("manual", f"call-{len(events)}")

        def cancel_call(self, external_call_id: str) -> None:
            pass

        def fetch_call(self, *, attempt_id: str, external_call_id: str | None) -> CallEvent | None:
            raise ProviderUnavailable("cannot tell", placed=None)

    service = CampaignService(repo, providers=Manual())
    campaign = service.create(
        "w1",
        name="live",
        agent=AgentSettings(provider="simulated"),
        concurrency_limit=1,
        recipients=[{"phone_number": p} for p in sample_numbers(3)],
    )
    dialer = Dialer(repo, Manual(), clock=SystemClock(), reconcile_interval=timedelta(hours=1))
    service._on_change = dialer.wake  # the service wakes the dialer (as a web app would)
    with dialer:
        service.start("w1", campaign.id)
        assert placed.wait(5)
        for n in range(3):
            placed.clear()
            req = events[-1]
            t0 = time.perf_counter()
            dialer.submit(
                CallEvent(
                    "manual",
                    CallStatus.ENDED,
                    attempt_id=req.attempt_id,
                    outcome=CallOutcome.ANSWERED,
                )
            )
            if n < 2:
                assert placed.wait(5)
                assert time.perf_counter() - t0 < 1.0
        deadline = time.time() + 5
        while time.time() < deadline:
            if service.get("w1", campaign.id).campaign.status is CampaignStatus.COMPLETED:
                break
            time.sleep(0.01)
    assert service.get("w1", campaign.id).campaign.status is CampaignStatus.COMPLETED
    assert len(events) == 3


def test_recipient_variables_reach_the_provider() -> None:
    service, repo, clock, provider, bus, cid = setup(1, hours=None)
    seen: list[DialRequest] = []

    class Spy:
        name = "simulated"

        def place_call(self, request: DialRequest) -> PlacedCall:
            seen.append(request)
            return provider.place_call(request)

        def cancel_call(self, external_call_id: str) -> None: ...

        def fetch_call(self, *, attempt_id: str, external_call_id: str | None) -> CallEvent | None:
            return provider.fetch_call(attempt_id=attempt_id, external_call_id=external_call_id)

    dialer = Dialer(repo, Spy(), clock=clock, events=bus)
    dialer.tick()
    assert seen[0].variables["first_name"] == "X"
    assert seen[0].prompt == "Hi X"


def test_expiry_cancels_and_skips_what_is_pending() -> None:
    service, repo, clock, provider, bus, cid = setup(
        30, hours=None, concurrency=1, expires_at=MONDAY_8AM_NY + timedelta(minutes=5)
    )
    Dialer(repo, provider, clock=clock, events=bus).run_until_idle()
    c = check_campaign(repo, cid, now=clock.now(), events=list(bus.history))
    assert c.status is CampaignStatus.CANCELLED and c.status_reason == "expired"
    assert c.counters.skipped > 0 and c.counters.in_flight == 0
    assert all(r.status is not RecipientStatus.PENDING for r in all_recipients(repo, cid))


def _first_call_and_its_end(
    n: int, outcome: CallOutcome, *, events: bool = False
) -> tuple[InMemoryRepository, VirtualClock, EventBus, DialerCore, str, str, CallEvent]:
    """A campaign of ``n`` recipients dialled one at a time, its first call placed and
    recorded: the repository, clock, bus, core (emitting to the bus when ``events``),
    campaign id, the call's attempt id, and the event that ends it with ``outcome``."""
    service, repo, clock, provider, bus, cid = setup(n, hours=None, concurrency=1)
    core = DialerCore(repo, events=bus if events else None)
    claims, _ = core.dispatch(clock.now())
    core.record_placed(clock.now(), claims[0], provider.place_call(claims[0].request))
    ended = CallEvent(
        "simulated", CallStatus.ENDED, attempt_id=claims[0].attempt.id, outcome=outcome
    )
    return repo, clock, bus, core, cid, claims[0].attempt.id, ended


def test_fused_event_and_dispatch_keeps_the_event_when_the_dispatch_fails() -> None:
    repo, clock, _bus, core, cid, attempt_id, ended = _first_call_and_its_end(
        3, CallOutcome.ANSWERED
    )

    def boom(now: datetime, snapshot: object) -> object:
        raise RuntimeError("planner broke")

    core.engine.plan = boom  # type: ignore[method-assign,assignment]
    with pytest.raises(RuntimeError, match="planner broke"):
        core.apply_event_and_dispatch(clock.now(), ended)
    with repo.transaction() as uow:
        attempt = uow.get_attempt(attempt_id)
        campaign = uow.get_campaign(cid)
    assert attempt is not None and attempt.status is AttemptStatus.ENDED  # the event stayed
    assert campaign.counters.completed == 1 and campaign.counters.in_flight == 0


def test_a_dispatch_that_fails_half_way_leaves_none_of_its_claims_and_the_event_once() -> None:
    repo, clock, bus, core, cid, attempt_id, ended = _first_call_and_its_end(
        4, CallOutcome.BUSY, events=True
    )
    apply_plan = core.apply_plan

    def claim_then_fail(*args: Any) -> Any:
        assert apply_plan(*args)  # the next recipient's claim is written, then:
        raise RuntimeError("store broke")

    core.apply_plan = claim_then_fail  # type: ignore[method-assign,assignment]
    with pytest.raises(RuntimeError, match="store broke"):
        core.apply_event_and_dispatch(clock.now(), ended)
    with repo.transaction() as uow:
        attempt = uow.get_attempt(attempt_id)
        campaign = uow.get_campaign(cid)
    assert attempt is not None and attempt.status is AttemptStatus.ENDED  # the event stayed
    attempts = all_attempts(repo, all_recipients(repo, cid))
    assert [a.id for each in attempts.values() for a in each] == [attempt.id]  # no new claim
    assert campaign.counters.queued == campaign.counters.calling == 0
    assert [e.attempt_id for e in bus.history if isinstance(e, CallEnded)] == [attempt.id]


def _placed_and_unrecorded() -> tuple[
    InMemoryRepository, EventBus, DialerCore, list[Claim], list[Placement], CallEvent, datetime
]:
    """Two calls placed at the same instant: the first recorded, the second a placement
    not yet recorded (``placed``); ``ended`` is the first call's final event (busy)."""
    service, repo, clock, provider, bus, cid = setup(4, hours=None, concurrency=2)
    core = DialerCore(repo, events=bus)
    now = clock.now()
    claims, _ = core.dispatch(now)
    core.record_placed(now, claims[0], provider.place_call(claims[0].request))
    placed = [(now, claims[1], provider.place_call(claims[1].request))]
    ended = CallEvent(
        "simulated", CallStatus.ENDED, attempt_id=claims[0].attempt.id, outcome=CallOutcome.BUSY
    )
    return repo, bus, core, claims, placed, ended, now


def test_an_event_that_fails_when_applied_again_after_a_failed_dispatch_stores_nothing() -> None:
    repo, bus, core, claims, placed, ended, now = _placed_and_unrecorded()
    on_event = core.engine.on_event
    calls = []

    def works_once(*args: Any) -> Any:
        calls.append(args)
        if len(calls) > 1:
            raise RuntimeError("engine broke the second time")
        return on_event(*args)

    def broken(*args: object) -> object:
        raise RuntimeError("planner broke")

    core.engine.on_event = works_once  # type: ignore[method-assign,assignment]
    core.engine.plan = broken  # type: ignore[method-assign,assignment]
    with pytest.raises(RuntimeError, match="the second time") as raised:
        core.apply_event_and_dispatch(now, ended, placed=placed)
    assert str(raised.value.__context__) == "planner broke"  # what failed first
    assert len(calls) == 2 and len(placed) == 1  # nothing committed: handed back
    with repo.transaction() as uow:
        first = uow.get_attempt(claims[0].attempt.id)
        second = uow.get_attempt(claims[1].attempt.id)
    assert first is not None and first.status is AttemptStatus.PLACED
    assert second is not None and second.status is AttemptStatus.DIALING
    assert not [e for e in bus.history if isinstance(e, CallEnded)]


class _CountingRepository(InMemoryRepository):
    """Counts outermost transactions (savepoints are not commits)."""

    def __init__(self) -> None:
        super().__init__()
        self.commits = 0
        self._depth = 0

    @contextlib.contextmanager
    def transaction(self, *, dispatch_lock: bool = False) -> Iterator[Any]:  # type: ignore[override]
        if self._depth == 0:
            self.commits += 1
        self._depth += 1
        try:
            with super().transaction(dispatch_lock=dispatch_lock) as uow:
                yield uow
        finally:
            self._depth -= 1


def test_virtual_time_commits_about_once_per_call() -> None:
    # the event, the dispatch it triggers and the record of the previous placements share
    # one transaction (it was three before: event + dispatch, then one per placement)
    clock = VirtualClock(MONDAY_8AM_NY)
    repo = _CountingRepository()
    provider = SimulatedProvider(clock, SimulationProfile(), seed=2)
    service = CampaignService(repo, clock=clock, providers=provider)
    campaign = service.create(
        "w1",
        name="Count",
        agent=AgentSettings(provider="simulated"),
        concurrency_limit=10,
        retry_policy=RetryPolicy(max_attempts=1),  # no retries: every step is a call ending
        recipients=[{"phone_number": p} for p in sample_numbers(300, seed=2)],
    )
    service.start("w1", campaign.id)
    before = repo.commits
    dialer = Dialer(
        repo, provider, clock=clock, rng=random.Random(1), reconcile_interval=timedelta(hours=1)
    )
    summary = dialer.run_until_idle()
    assert summary.calls_placed == 300
    assert repo.commits - before <= summary.calls_placed * 1.1 + 10
    check_campaign(repo, campaign.id, now=clock.now())


def test_a_run_stopped_early_leaves_every_placed_call_recorded() -> None:
    service, repo, clock, provider, bus, cid = setup(30, hours=None, concurrency=5)
    dialer = Dialer(repo, provider, clock=clock, events=bus, rng=random.Random(1))
    dialer.run_until_idle(max_ticks=4)
    placed = {c.attempt_id for c in provider.call_log()}
    assert placed
    with repo.transaction() as uow:
        for attempt_id in placed:
            attempt = uow.get_attempt(attempt_id)
            assert attempt is not None and attempt.status is not AttemptStatus.DIALING
            recipient = uow.get_recipient(attempt.recipient_id)
            assert recipient.status is not RecipientStatus.QUEUED
    assert sum(isinstance(e, CallPlaced) for e in bus.history) == len(placed)


def test_recording_a_round_of_placements_survives_one_bad_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from outdial.errors import RepositoryError
    from outdial.testing.memory import InMemoryUnitOfWork

    service, repo, clock, provider, bus, cid = setup(3, hours=None, concurrency=2)
    core = DialerCore(repo)
    now = clock.now()
    claims, _ = core.dispatch(now)
    assert len(claims) == 2
    placements = [(now, c, provider.place_call(c.request)) for c in claims]
    save = InMemoryUnitOfWork.save_attempt

    def failing(self: InMemoryUnitOfWork, attempt: Any) -> None:
        if attempt.id == claims[0].attempt.id:
            raise RepositoryError("cannot write this one")
        save(self, attempt)

    monkeypatch.setattr(InMemoryUnitOfWork, "save_attempt", failing)
    with pytest.raises(RepositoryError, match="cannot write this one"):
        core.record_placements(placements)
    monkeypatch.undo()
    with repo.transaction() as uow:
        first = uow.get_attempt(claims[0].attempt.id)
        second = uow.get_attempt(claims[1].attempt.id)
    assert first is not None and first.status is AttemptStatus.DIALING  # reconciled later
    assert second is not None and second.status is AttemptStatus.PLACED


def test_placements_recorded_with_an_event_are_kept_or_handed_back_as_committed() -> None:
    repo, bus, core, claims, placed, ended, now = _placed_and_unrecorded()

    def status(attempt_id: str) -> AttemptStatus:
        with repo.transaction() as uow:
            attempt = uow.get_attempt(attempt_id)
        assert attempt is not None
        return attempt.status

    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("engine broke")

    # the event fails: nothing is committed and the placement is handed back
    core.engine.on_event = broken  # type: ignore[method-assign,assignment]
    with pytest.raises(RuntimeError, match="engine broke"):
        core.apply_event_and_dispatch(now, ended, placed=placed)
    assert len(placed) == 1 and status(claims[1].attempt.id) is AttemptStatus.DIALING
    del core.engine.on_event

    # only the dispatch fails: the event and the placement are committed, once
    core.engine.plan = broken  # type: ignore[method-assign,assignment]
    with pytest.raises(RuntimeError, match="engine broke"):
        core.apply_event_and_dispatch(now, ended, placed=placed)
    assert placed == []
    assert status(claims[1].attempt.id) is AttemptStatus.PLACED
    assert status(claims[0].attempt.id) is AttemptStatus.ENDED
    recorded = [e for e in bus.history if isinstance(e, CallPlaced)]
    assert [e.attempt_id for e in recorded] == [claims[0].attempt.id, claims[1].attempt.id]


class _CountingSource(_Wrapped):
    """A provider wrapper that counts the event source's calls; ``lie_at`` makes
    ``next_event_at`` announce an event at that instant once, which it then does
    not have (a source whose two answers disagree)."""

    def __init__(self, inner: SimulatedProvider, lie_at: datetime | None = None) -> None:
        super().__init__(inner)
        self.asked_for_events = 0
        self.asked_for_nothing = 0
        self.lie_at = lie_at

    def next_event_at(self) -> datetime | None:
        if self.lie_at is not None:
            lie, self.lie_at = self.lie_at, None
            return lie
        return self.inner.next_event_at()

    def due_events(self, now: datetime) -> list[CallEvent]:
        events = self.inner.due_events(now)
        self.asked_for_events += 1
        self.asked_for_nothing += not events
        return events


class _LosingFates(_Wrapped):
    """A provider wrapper whose first ``lose`` dials fail with an unknown fate (the call
    may have been placed: the runner rechecks it later); counts ``fetch_call``."""

    def __init__(self, inner: SimulatedProvider, lose: int) -> None:
        super().__init__(inner)
        self.lose = lose
        self.fetched: list[str] = []

    def place_call(self, request: DialRequest) -> PlacedCall:
        if self.lose > 0:
            self.lose -= 1
            raise ProviderUnavailable("timed out", placed=None)
        return self.inner.place_call(request)

    def fetch_call(self, *, attempt_id: str, external_call_id: str | None) -> CallEvent | None:
        self.fetched.append(attempt_id)
        return super().fetch_call(attempt_id=attempt_id, external_call_id=external_call_id)


@pytest.mark.parametrize("use_async", [False, True])
def test_a_tick_reconciles_only_when_a_recheck_or_the_periodic_look_is_due(
    use_async: bool,
) -> None:
    service, repo, clock, provider, bus, cid = setup(20, hours=None, concurrency=3)
    source = _LosingFates(provider, lose=1)
    day = timedelta(days=1)
    runner: Any
    if use_async:
        runner = AsyncDialer(repo, AsyncFace(source), clock=clock, reconcile_interval=day)
        loop = asyncio.new_event_loop()

        def tick() -> Any:
            return loop.run_until_complete(runner.tick())
    else:
        runner = Dialer(repo, source, clock=clock, reconcile_interval=day)
        tick = runner.tick
    try:
        tick()  # the first tick looks over unfinished attempts (none yet), then dials 3
        assert source.fetched == [] and len(provider.call_log()) == 2  # one fate lost
        (lost,) = runner._recheck
        tick()  # nothing due: no look at the provider
        assert source.fetched == []
        clock.advance_to(runner._recheck[lost])
        tick()  # the lost dial's recheck is due: only it is looked at
        assert source.fetched == [lost]
        tick()
        assert source.fetched == [lost]
        # the periodic look, a day after the first: every call placed so far (no event
        # was delivered, so none of them has ended for the dialer)
        placed = [c.attempt_id for c in provider.call_log()]
        clock.advance_to(MONDAY_8AM_NY + day)
        tick()
        assert sorted(source.fetched[1:]) == sorted(placed)
    finally:
        if use_async:
            loop.close()


def _run_counted(source_for: Callable[[SimulatedProvider], Any]) -> tuple[Any, Any, Any]:
    service, repo, clock, provider, bus, cid = setup(
        80, retry_policy=RetryPolicy(max_attempts=2, backoff=Fixed(timedelta(minutes=30)))
    )
    source = source_for(provider)
    dialer = Dialer(
        repo,
        source,
        clock=clock,
        events=bus,
        rng=random.Random(4),
        new_id=_ids(),
        reconcile_interval=timedelta(days=1),
    )
    summary = dialer.run_until_idle()
    campaign = check_campaign(repo, cid, now=clock.now(), events=list(bus.history))
    outcome = (campaign.status, campaign.counters, clock.now(), summary.calls_placed)
    return outcome, source, summary


def test_virtual_time_asks_the_source_for_events_only_once_one_is_due() -> None:
    plain, _, _ = _run_counted(lambda provider: provider)
    counted, source, summary = _run_counted(_CountingSource)
    assert counted == plain
    assert summary.events_applied > 0
    # only the first tick reconciles (once a day): every other step knew an event was due
    assert source.asked_for_nothing <= 1
    assert source.asked_for_events <= summary.events_applied + 1


START_LIE = MONDAY_8AM_NY + timedelta(minutes=30)  # before the New York window opens


def test_a_source_announcing_an_event_it_does_not_have_does_not_stall_the_run() -> None:
    plain, _, _ = _run_counted(lambda provider: provider)
    lied, source, _ = _run_counted(lambda provider: _CountingSource(provider, lie_at=START_LIE))
    assert lied == plain
    assert source.lie_at is None  # the lie was told and the run went on
    assert source.asked_for_nothing >= 1  # ... it was asked for that event, and had none


def test_debug_logging_reports_every_placement() -> None:
    for use_async in (False, True):
        service, repo, clock, provider, bus, cid = setup(12, concurrency=3)
        with structlog.testing.capture_logs() as logs:
            if use_async:
                asyncio.run(
                    AsyncDialer(repo, provider.as_async(), clock=clock, events=bus).run_until_idle()
                )
            else:
                Dialer(repo, provider, clock=clock, events=bus).run_until_idle()
        placed = [entry for entry in logs if entry["event"] == "call_placed"]
        assert all(entry["log_level"] == "debug" for entry in placed)
        calls = provider.call_log()
        assert len(placed) == len(calls) == provider.calls_placed > 0
        assert [entry["attempt"] for entry in placed] == [c.attempt_id for c in calls]


def _capturing(level: int) -> tuple[Any, list[Any]]:
    """A structlog filtering bound logger at ``level`` and the lines it logs."""
    capture = structlog.testing.LogCapture()
    wrapper = structlog.make_filtering_bound_logger(level)
    return structlog.wrap_logger(None, processors=[capture], wrapper_class=wrapper).bind(), (
        capture.entries
    )


def _stdlib_capturing(name: str, level: int) -> tuple[logging.Logger, list[Any]]:
    """A standard-library logger at ``level`` and a list of what passes its level."""
    std = logging.getLogger(name)
    std.setLevel(level)
    capture = structlog.testing.LogCapture()
    log = structlog.wrap_logger(
        std,
        processors=[structlog.stdlib.filter_by_level, capture],
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    return log, capture.entries


def test_a_log_drops_debug_lines_for_good_only_when_its_class_is_a_quiet_structlog_filter() -> None:
    for level in (logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL):
        assert _drops_debug(_capturing(level)[0])
    for level in (logging.NOTSET, logging.DEBUG):
        assert not _drops_debug(_capturing(level)[0])
    # a standard-library logger can change its level at any time; a lazy proxy binds anew
    # on every call (with the configuration of that moment)
    assert not _drops_debug(_stdlib_capturing("outdial.test.quiet", logging.INFO)[0])
    assert not _drops_debug(structlog.get_logger("outdial.test.lazy"))
    overridden, _ = _capturing(logging.INFO)
    overridden.debug = lambda event, **kw: None
    assert not _drops_debug(overridden)


def _run_in_two_halves(use_async: bool, logger: Any, between: Callable[[Any], None]) -> int:
    """Run a campaign until the first calls are placed, call ``between(runner)``, run
    the rest; returns the calls placed by the second half."""
    service, repo, clock, provider, bus, cid = setup(12, concurrency=3)
    first_half = MONDAY_8AM_NY + timedelta(hours=1, minutes=2)  # 9:02 in New York
    first: RunSummary
    second: RunSummary
    if use_async:
        runner: Any = AsyncDialer(repo, provider.as_async(), clock=clock, logger=logger)
        first = asyncio.run(runner.run_until_idle(until=first_half))
        between(runner)
        second = asyncio.run(runner.run_until_idle())
    else:
        runner = Dialer(repo, provider, clock=clock, logger=logger)
        first = runner.run_until_idle(until=first_half)
        between(runner)
        second = runner.run_until_idle()
    assert first.calls_placed > 0 and second.calls_placed > 0
    return second.calls_placed


@pytest.mark.parametrize("use_async", [False, True])
def test_placements_are_logged_at_debug_once_a_new_log_enables_it(use_async: bool) -> None:
    """A runner whose log drops debug lines skips ``call_placed``; a log assigned later
    that keeps them gets every placement from then on."""
    quiet, quiet_lines = _capturing(logging.INFO)
    loud, loud_lines = _capturing(logging.DEBUG)

    def enable_debug(runner: Any) -> None:
        runner.log = loud

    second_half = _run_in_two_halves(use_async, quiet, enable_debug)
    assert not [line for line in quiet_lines if line["event"] == "call_placed"]
    placed = [line for line in loud_lines if line["event"] == "call_placed"]
    assert len(placed) == second_half


@pytest.mark.parametrize("use_async", [False, True])
def test_placements_are_logged_once_a_standard_library_level_enables_debug(
    use_async: bool,
) -> None:
    name = f"outdial.test.placements.{use_async}"
    log, lines = _stdlib_capturing(name, logging.INFO)

    def enable_debug(runner: Any) -> None:
        assert not [line for line in lines if line["event"] == "call_placed"]
        logging.getLogger(name).setLevel(logging.DEBUG)

    second_half = _run_in_two_halves(use_async, log, enable_debug)
    assert len([line for line in lines if line["event"] == "call_placed"]) == second_half


def _broken_recovery() -> int:
    raise RuntimeError("provider API down")


@pytest.mark.parametrize("use_async", [False, True])
def test_a_long_running_dialer_logs_a_failed_recovery_and_goes_on_dialling(
    use_async: bool,
) -> None:
    """``recover()`` failing at start (e.g. the provider's API is down) is logged as
    ``recover_failed``; the runner then dials as usual (the sync one in its thread,
    the async one in its task) and stops cleanly."""
    service, repo, clock, provider, bus, cid = setup(3, concurrency=3, hours=None)

    def dialled() -> bool:
        return provider.calls_placed > 0

    with structlog.testing.capture_logs() as logs:
        if use_async:
            async_dialer = AsyncDialer(repo, provider.as_async(), clock=clock)

            async def broken() -> int:
                return _broken_recovery()

            async_dialer.recover = broken  # type: ignore[method-assign]

            async def scenario() -> None:
                async with async_dialer:
                    for _ in range(300):
                        if dialled():
                            break
                        await asyncio.sleep(0.01)

            asyncio.run(scenario())
        else:
            dialer = Dialer(repo, provider, clock=clock)
            dialer.recover = _broken_recovery  # type: ignore[method-assign]
            with dialer:
                for _ in range(300):
                    if dialled():
                        break
                    time.sleep(0.01)
    events = [entry["event"] for entry in logs]
    assert "recover_failed" in events
    assert dialled()
    assert events[-1] == "dialer_stopped"

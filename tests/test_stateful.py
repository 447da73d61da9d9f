"""Hypothesis drives the service and the engine with random sequences and checks
invariants 1-8 after every step (DESIGN.md): start, pause, resume, terminate,
results, duplicate and reordered events, clock jumps, worker restarts,
suppression and late additions."""

from __future__ import annotations

import contextlib
import random
from datetime import datetime, timedelta, timezone

import attrs
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from invariants import check_campaign
from outdial import (
    AgentSettings,
    BusinessHours,
    CallEvent,
    CampaignService,
    CampaignStatus,
    Dialer,
    EventBus,
    InvalidTransition,
    RetryPolicy,
)
from outdial.engine import Effect
from outdial.retry import Fixed, RollingCap
from outdial.simulation import SimulatedProvider, SimulationProfile, VirtualClock, sample_numbers
from outdial.testing import InMemoryRepository

UTC = timezone.utc
START = datetime(2026, 11, 20, 13, 0, tzinfo=UTC)  # Friday 08:00 New York


class Recording:
    """Wraps the simulator so the test can replay events it delivered."""

    def __init__(self, inner: SimulatedProvider) -> None:
        self.inner = inner
        self.name = inner.name
        self.delivered: list[CallEvent] = []

    def place_call(self, request):  # type: ignore[no-untyped-def]
        return self.inner.place_call(request)

    def cancel_call(self, external_call_id: str) -> None:
        self.inner.cancel_call(external_call_id)

    def fetch_call(self, *, attempt_id, external_call_id):  # type: ignore[no-untyped-def]
        return self.inner.fetch_call(attempt_id=attempt_id, external_call_id=external_call_id)

    def next_event_at(self):  # type: ignore[no-untyped-def]
        return self.inner.next_event_at()

    def due_events(self, now):  # type: ignore[no-untyped-def]
        events = self.inner.due_events(now)
        self.delivered.extend(events)
        return events


class CampaignMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = VirtualClock(START)
        self.repo = InMemoryRepository()
        self.bus = EventBus()
        profile = SimulationProfile(
            duplicate_rate=0.2,
            reorder_rate=0.2,
            progress_events=True,
            unknown_fate_rate=0.05,
            provider_error_rate=0.05,
            opted_out_rate=0.03,
        )
        self.provider = Recording(SimulatedProvider(self.clock, profile, seed=11))
        self.service = CampaignService(
            self.repo, clock=self.clock, events=self.bus, providers=self.provider
        )
        hours = BusinessHours.weekly("America/New_York", {"mon-fri": [("09:00", "17:00")]})
        self.campaigns: list[tuple[str, str]] = []
        numbers = sample_numbers(24, seed=5)
        for ws, chunk, limit in (("w1", numbers[:12], 3), ("w2", numbers[8:], 2)):
            c = self.service.create(
                ws,
                name=f"campaign {ws}",
                agent=AgentSettings(provider="simulated"),
                business_hours=hours,
                rule_set="us",
                concurrency_limit=limit,
                retry_policy=RetryPolicy(
                    max_attempts=3,
                    backoff=Fixed(timedelta(minutes=20)),
                    caps=(RollingCap(2, timedelta(hours=24)),),
                ),
                recipients=[{"phone_number": n} for n in chunk],
            )
            self.campaigns.append((ws, c.id))
        self.suppressed: dict[tuple[str, str], datetime] = {}
        self.worker = 0
        self.dialer = self._new_dialer()
        self.numbers = numbers

    def _new_dialer(self) -> Dialer:
        self.worker += 1
        return Dialer(
            self.repo,
            self.provider,
            clock=self.clock,
            events=self.bus,
            rng=random.Random(self.worker),
            worker_id=f"worker-{self.worker % 2}",  # restarts reuse ids, as a service would
        )

    @rule(
        which=st.integers(0, 1), action=st.sampled_from(["start", "pause", "resume", "terminate"])
    )
    def act(self, which: int, action: str) -> None:
        ws, cid = self.campaigns[which]
        with contextlib.suppress(InvalidTransition):
            getattr(self.service, action)(ws, cid)

    @rule(minutes=st.integers(0, 600))
    def run_for(self, minutes: int) -> None:
        self.dialer.run_until_idle(until=self.clock.now() + timedelta(minutes=minutes))

    @rule(hours=st.integers(1, 80))
    def clock_jump(self, hours: int) -> None:
        """Time passes while no dialer runs (a service outage)."""
        self.clock.advance(timedelta(hours=hours))

    @rule()
    def restart_worker(self) -> None:
        self.dialer = self._new_dialer()

    @precondition(lambda self: bool(self.provider.delivered))
    @rule(data=st.data())
    def replay_old_event(self, data: st.DataObject) -> None:
        event = data.draw(st.sampled_from(self.provider.delivered))
        before = [self._counters(cid) for _, cid in self.campaigns]
        result = self.service.apply_event(event)
        after = [self._counters(cid) for _, cid in self.campaigns]
        if event.final:
            assert result.effect in (Effect.DUPLICATE, Effect.STALE, Effect.LATE, None)
            assert before == after

    @rule(index=st.integers(0, 23), which=st.integers(0, 1))
    def suppress(self, index: int, which: int) -> None:
        ws = self.campaigns[which][0]
        number = self.service.suppress(ws, self.numbers[index])
        self.suppressed.setdefault((ws, number), self.clock.now())

    @rule(which=st.integers(0, 1), n=st.integers(0, 10**6))
    def add_recipient(self, which: int, n: int) -> None:
        ws, cid = self.campaigns[which]
        number = f"+1212{2000000 + n:07d}"
        with contextlib.suppress(InvalidTransition, ValueError):
            self.service.add_recipient(ws, cid, number)

    def _counters(self, cid: str) -> object:
        with self.repo.transaction() as uow:
            return uow.get_campaign(cid).counters

    @invariant()
    def invariants_hold(self) -> None:
        for ws, cid in self.campaigns:
            campaign = check_campaign(
                self.repo, cid, now=self.clock.now(), events=list(self.bus.history)
            )
            self._no_dial_after_suppression(ws, cid)
            if campaign.status in (CampaignStatus.PAUSED, CampaignStatus.CANCELLED):
                pass

    def _no_dial_after_suppression(self, ws: str, cid: str) -> None:
        from invariants import all_attempts, all_recipients

        recipients = all_recipients(self.repo, cid)
        for r in recipients:
            since = self.suppressed.get((ws, r.phone))
            if since is None:
                continue
            for a in all_attempts(self.repo, [r])[r.id]:
                assert a.created_at < since or a.test_call, (r.phone, a.created_at, since)

    def teardown(self) -> None:
        # whatever happened, finishing the run leaves every campaign consistent
        self.dialer.run_until_idle(until=self.clock.now() + timedelta(days=14))
        for _, cid in self.campaigns:
            c = check_campaign(self.repo, cid, now=self.clock.now(), events=list(self.bus.history))
            assert c.status is not CampaignStatus.ACTIVE or c.counters.remaining > 0
            _ = attrs.asdict(c.counters)


TestCampaignMachine = CampaignMachine.TestCase
TestCampaignMachine.settings = settings(
    max_examples=25,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

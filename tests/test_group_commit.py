"""Group commit: ``apply_events`` (many provider events, one transaction) and the
asyncio :class:`~outdial.group_commit.EventApplier` that feeds it from concurrent
webhook handlers.

The reference is always the same events applied one by one with ``apply_event``
in an identical world (same ids, same clock): the results, the stored state, the
counters and the domain events must be the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outdial import AgentSettings, CampaignService, EventBus
from outdial.dispatch import DialerCore, EventResult
from outdial.engine import Effect
from outdial.errors import StaleClaim
from outdial.events import CallEnded, DomainEvent
from outdial.group_commit import EventApplier
from outdial.outcomes import CallOutcome
from outdial.ports import CallEvent, CallStatus, PlacedCall, Repository
from outdial.recipient import Attempt, RecipientStatus
from outdial.retry import RetryPolicy
from outdial.simulation import VirtualClock
from outdial.testing import InMemoryRepository

UTC = timezone.utc
START = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)  # a Monday, 10:00 in New York
WS = "w1"
AGENT = AgentSettings(
    provider="vapi", external_agent_id="asst_1", phone_number="+12125550100", phone_number_id="pn_1"
)
ANSWERED = CallOutcome.ANSWERED
PHONES = [f"+1212555{n:04d}" for n in range(101, 109)]


def _sqlite(folder: Path) -> Repository:
    sql = pytest.importorskip("outdial.sql")
    repo: Repository = sql.connect(f"sqlite:///{folder / 'outdial.sqlite'}", create=True)
    return repo


class World:
    """A started campaign whose calls are all placed, with deterministic ids, so two
    worlds built alike are identical and can be compared event for event."""

    def __init__(self, repo: Repository, n: int = len(PHONES)) -> None:
        counter = itertools.count()
        self.repo = repo
        self.clock = VirtualClock(START)
        self.bus = EventBus(keep=10_000)
        self.service = CampaignService(
            repo, clock=self.clock, events=self.bus, new_id=lambda: f"id-{next(counter)}"
        )
        campaign = self.service.create(
            WS,
            name="Renewals",
            agent=AGENT,
            concurrency_limit=n,
            retry_policy=RetryPolicy(max_attempts=3),
            recipients=[{"phone_number": p} for p in PHONES[:n]],
        )
        self.campaign_id = campaign.id
        self.service.start(WS, campaign.id)
        self.attempts: list[Attempt] = []
        claims, _plan = self.service.core.dispatch(self.clock.now())
        assert len(claims) == n
        for claim in sorted(claims, key=lambda c: c.attempt.phone):
            call_id = f"call-{claim.attempt.phone}"
            self.service.core.record_placed(self.clock.now(), claim, PlacedCall("vapi", call_id))
            self.attempts.append(claim.attempt)
        self.clock.advance(timedelta(minutes=1))
        self.seen = len(self.domain_events())

    def domain_events(self) -> list[DomainEvent]:
        return list(self.bus.history)

    def new_domain_events(self) -> list[DomainEvent]:
        return self.domain_events()[self.seen :]

    def state(self) -> tuple[Any, ...]:
        details = self.service.get(WS, self.campaign_id)
        recipients = self.service.list_recipients(WS, self.campaign_id, page_size=100).items
        return (
            details.campaign.counters,
            details.campaign.status,
            sorted((r.phone, r.status, r.attempts, r.next_attempt_at) for r in recipients),
        )


def ended(attempt: Attempt, outcome: CallOutcome, **kw: Any) -> CallEvent:
    return CallEvent("vapi", CallStatus.ENDED, attempt_id=attempt.id, outcome=outcome, **kw)


def progress(attempt: Attempt, status: CallStatus) -> CallEvent:
    return CallEvent("vapi", status, attempt_id=attempt.id)


def _spec_events(world: World, spec: Sequence[tuple[int, str]]) -> list[CallEvent]:
    """Events from ``(attempt index, kind)``: kinds are call statuses or outcomes."""
    events = []
    for index, kind in spec:
        attempt = world.attempts[index]
        if kind in CallStatus.__members__.values() and kind != CallStatus.ENDED.value:
            events.append(progress(attempt, CallStatus(kind)))
        elif kind == "by-call-id":
            events.append(
                CallEvent(
                    "vapi",
                    CallStatus.ENDED,
                    external_call_id=f"call-{attempt.phone}",
                    outcome=CallOutcome.ANSWERED,
                )
            )
        elif kind == "unknown":
            events.append(ended(attempt, CallOutcome.ANSWERED, attempt_id=None))
        else:
            events.append(ended(attempt, CallOutcome(kind)))
    return events


def _unknown(event: CallEvent) -> CallEvent:
    return CallEvent("vapi", CallStatus.ENDED, attempt_id="no-such", outcome=CallOutcome.ANSWERED)


KINDS = [
    "ringing",
    "in_progress",
    "answered",
    "no_answer",
    "busy",
    "voicemail",
    "opted_out",
    "error",
    "by-call-id",
]

# covers: a plain end, two events for one attempt, a duplicate, an out-of-order late
# event, a match by the provider's call id, a retry and an opt-out
SCENARIO: list[tuple[int, str]] = [
    (0, "answered"),
    (1, "in_progress"),
    (1, "no_answer"),
    (2, "busy"),
    (2, "busy"),
    (3, "by-call-id"),
    (4, "answered"),
    (4, "ringing"),
    (5, "opted_out"),
    (6, "voicemail"),
    (6, "answered"),
]


def _compare(
    make_repo: Callable[[], Repository], spec: Sequence[tuple[int, str]], *, unknown: bool = False
) -> tuple[World, list[EventResult | Exception]]:
    batch_world, single_world = World(make_repo()), World(make_repo())
    batch_events = _spec_events(batch_world, spec)
    single_events = _spec_events(single_world, spec)
    if unknown:
        batch_events.append(_unknown(batch_events[0]))
        single_events.append(_unknown(single_events[0]))
    assert batch_events == single_events  # same ids: the two worlds are twins

    batched = batch_world.service.apply_events(batch_events)
    one_by_one = [single_world.service.apply_event(e) for e in single_events]

    assert batched == one_by_one
    assert batch_world.state() == single_world.state()
    assert batch_world.new_domain_events() == single_world.new_domain_events()
    return batch_world, batched


# -- apply_events ------------------------------------------------------------------------------


def test_a_batch_has_the_same_results_effects_and_domain_events_as_one_by_one() -> None:
    world, results = _compare(InMemoryRepository, SCENARIO, unknown=True)
    effects = [r.effect if isinstance(r, EventResult) else r for r in results]
    assert effects[0] is Effect.APPLIED
    assert effects[4] is Effect.DUPLICATE  # the second busy for attempt 2
    assert effects[-1] is None  # no attempt matches: reported, nothing stored
    counters = world.service.get(WS, world.campaign_id).campaign.counters
    assert counters.calling == 1  # attempt 7 is still on the phone
    assert sum(isinstance(e, CallEnded) for e in world.new_domain_events()) == 7


def test_a_batch_on_sqlite_matches_one_by_one(tmp_path: Path) -> None:
    folders = iter(tmp_path / str(n) for n in range(2))

    def make() -> Repository:
        folder = next(folders)
        folder.mkdir()
        return _sqlite(folder)

    world, results = _compare(make, SCENARIO, unknown=True)
    assert all(isinstance(r, EventResult) for r in results)
    stats = world.service.stats(WS, world.campaign_id)
    assert stats.in_flight == 1


def test_the_batch_is_one_transaction(tmp_path: Path) -> None:
    world = World(InMemoryRepository())
    opened = 0
    transaction = world.repo.transaction

    def counting(**kw: Any) -> Any:
        nonlocal opened
        opened += 1
        return transaction(**kw)

    world.repo.transaction = counting  # type: ignore[method-assign]
    results = world.service.apply_events([ended(a, CallOutcome.ANSWERED) for a in world.attempts])
    assert opened == 1
    assert all(isinstance(r, EventResult) and r.freed for r in results)
    assert world.service.stats(WS, world.campaign_id).completed == len(PHONES)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, len(PHONES) - 1), st.sampled_from(KINDS)),
        min_size=1,
        max_size=20,
    )
)
def test_any_batch_equals_the_same_events_one_by_one(spec: list[tuple[int, str]]) -> None:
    _compare(InMemoryRepository, spec)


class PoisonedRepository:
    """A repository whose writes of some attempts fail with :class:`StaleClaim` (as when
    another worker took them over mid-flight)."""

    def __init__(self, inner: Repository, poisoned: set[str]) -> None:
        self.inner = inner
        self.poisoned = poisoned

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @contextlib.contextmanager
    def transaction(self, **kw: Any) -> Iterator[Any]:
        with self.inner.transaction(**kw) as uow:
            yield _PoisonedUnitOfWork(uow, self.poisoned)


class _PoisonedUnitOfWork:
    def __init__(self, uow: Any, poisoned: set[str]) -> None:
        self.uow = uow
        self.poisoned = poisoned

    def __getattr__(self, name: str) -> Any:
        return getattr(self.uow, name)

    def save_attempt(self, attempt: Attempt) -> Any:
        if attempt.id in self.poisoned:
            raise StaleClaim(attempt.id, attempt.claim_token)
        return self.uow.save_attempt(attempt)


def test_one_failing_event_does_not_affect_the_others() -> None:
    world = World(InMemoryRepository())
    bad = world.attempts[3]
    core = DialerCore(
        PoisonedRepository(world.repo, {bad.id}),
        events=world.bus,
    )
    events = [ended(a, CallOutcome.ANSWERED) for a in world.attempts]
    events.insert(5, events[1])  # and a duplicate in the same batch
    results = core.apply_events(world.clock.now(), events)

    assert isinstance(results[3], StaleClaim) and results[3].attempt_id == bad.id
    good = [r for i, r in enumerate(results) if i != 3]
    assert all(isinstance(r, EventResult) for r in good)
    assert [r.effect for r in good if isinstance(r, EventResult)].count(Effect.DUPLICATE) == 1
    state = world.service.stats(WS, world.campaign_id)
    assert (state.completed, state.in_flight) == (len(PHONES) - 1, 1)
    ended_ids = [e.attempt_id for e in world.new_domain_events() if isinstance(e, CallEnded)]
    assert ended_ids == [a.id for a in world.attempts if a is not bad]  # once each, in order


def test_an_empty_batch_does_nothing() -> None:
    world = World(InMemoryRepository(), n=1)
    assert world.service.apply_events([]) == []
    assert world.new_domain_events() == []


# -- EventApplier ---------------------------------------------------------------------------------


def test_concurrent_handlers_get_their_own_results_in_shared_batches() -> None:
    world = World(InMemoryRepository())
    events = [ended(a, CallOutcome.ANSWERED) for a in world.attempts]

    async def main() -> tuple[list[EventResult], EventApplier]:
        async with EventApplier(world.service.apply_events) as applier:
            results = await asyncio.gather(*(applier.apply(e) for e in events))
        return list(results), applier

    results, applier = asyncio.run(main())
    assert [r.attempt_id for r in results] == [a.id for a in world.attempts]
    assert all(r.effect is Effect.APPLIED for r in results)
    assert applier.events == len(events)
    assert applier.batches < len(events) and applier.mean_batch > 1
    assert world.service.stats(WS, world.campaign_id).completed == len(PHONES)


def test_a_lone_event_is_applied_at_once_in_a_batch_of_one() -> None:
    world = World(InMemoryRepository(), n=1)
    calls: list[int] = []

    def apply_events(events: Sequence[CallEvent]) -> list[EventResult | Exception]:
        calls.append(len(events))
        return world.service.apply_events(events)

    async def main() -> EventResult:
        async with EventApplier(apply_events) as applier:
            # nothing else is queued: no timer to wait for, the answer comes at once
            return await asyncio.wait_for(
                applier.apply(ended(world.attempts[0], CallOutcome.ANSWERED)), 2.0
            )

    result = asyncio.run(main())
    assert result.effect is Effect.APPLIED
    assert calls == [1]


def test_batches_never_exceed_max_batch() -> None:
    world = World(InMemoryRepository())
    sizes: list[int] = []

    def apply_events(events: Sequence[CallEvent]) -> list[EventResult | Exception]:
        sizes.append(len(events))
        return world.service.apply_events(events)

    async def main() -> None:
        async with EventApplier(apply_events, max_batch=3) as applier:
            await asyncio.gather(
                *(applier.apply(ended(a, CallOutcome.ANSWERED)) for a in world.attempts)
            )

    asyncio.run(main())
    assert sum(sizes) == len(PHONES) and max(sizes) == 3


def test_a_failing_event_raises_in_its_own_handler_only() -> None:
    world = World(InMemoryRepository())
    bad = world.attempts[2]
    core = DialerCore(
        PoisonedRepository(world.repo, {bad.id}),
        events=world.bus,
    )

    async def main() -> list[EventResult | BaseException]:
        async with EventApplier(lambda es: core.apply_events(world.clock.now(), es)) as applier:
            return await asyncio.gather(
                *(applier.apply(ended(a, CallOutcome.BUSY)) for a in world.attempts),
                return_exceptions=True,
            )

    results = asyncio.run(main())
    assert isinstance(results[2], StaleClaim)
    assert all(isinstance(r, EventResult) for i, r in enumerate(results) if i != 2)


def test_duplicates_from_concurrent_handlers_are_counted_once() -> None:
    world = World(InMemoryRepository())
    events = [ended(a, CallOutcome.NO_ANSWER) for a in world.attempts] * 4  # each sent 4 times

    async def main() -> list[EventResult]:
        async with EventApplier(world.service.apply_events, max_batch=5) as applier:
            return list(await asyncio.gather(*(applier.apply(e) for e in events)))

    results = asyncio.run(main())
    applied = [r.attempt_id for r in results if r.effect is Effect.APPLIED]
    assert sorted(map(str, applied)) == sorted(a.id for a in world.attempts)  # once each
    counters = world.service.get(WS, world.campaign_id).campaign.counters
    assert (counters.pending, counters.calling) == (len(PHONES), 0)  # each retried once
    retried = world.service.list_recipients(WS, world.campaign_id, page_size=100).items
    assert all(r.status is RecipientStatus.PENDING and r.attempts == 1 for r in retried)


def test_stop_applies_every_queued_event_and_then_refuses_new_ones() -> None:
    world = World(InMemoryRepository())
    release = threading.Event()

    def slow(events: Sequence[CallEvent]) -> list[EventResult | Exception]:
        release.wait(5)
        return world.service.apply_events(events)

    async def main() -> tuple[list[EventResult], EventApplier]:
        applier = EventApplier(slow)
        await applier.start()
        handlers = [
            asyncio.ensure_future(applier.apply(ended(a, CallOutcome.ANSWERED)))
            for a in world.attempts
        ]
        await asyncio.sleep(0.01)  # the first batch is in the worker thread, the rest queued
        stopping = asyncio.ensure_future(applier.stop())
        await asyncio.sleep(0.01)
        assert not applier.running
        with pytest.raises(RuntimeError, match="not running"):
            await applier.apply(ended(world.attempts[0], CallOutcome.ANSWERED))
        release.set()
        await stopping
        return list(await asyncio.gather(*handlers)), applier

    results, applier = asyncio.run(main())
    assert all(r.effect is Effect.APPLIED for r in results)
    assert applier.events == len(PHONES)
    assert world.service.stats(WS, world.campaign_id).completed == len(PHONES)


def test_apply_before_start_is_refused() -> None:
    world = World(InMemoryRepository(), n=1)

    async def main() -> None:
        applier = EventApplier(world.service.apply_events)
        with pytest.raises(RuntimeError, match="not running"):
            await applier.apply(ended(world.attempts[0], CallOutcome.ANSWERED))

    asyncio.run(main())
    assert world.new_domain_events() == []


def test_a_cancelled_handler_does_not_cancel_the_batch() -> None:
    world = World(InMemoryRepository())
    started, release = threading.Event(), threading.Event()

    def slow(events: Sequence[CallEvent]) -> list[EventResult | Exception]:
        started.set()
        release.wait(5)
        return world.service.apply_events(events)

    async def main() -> list[EventResult]:
        async with EventApplier(slow) as applier:
            first = asyncio.ensure_future(
                applier.apply(ended(world.attempts[0], CallOutcome.ANSWERED))
            )
            await asyncio.to_thread(started.wait, 5)  # its batch is being applied
            others = [
                asyncio.ensure_future(applier.apply(ended(a, CallOutcome.ANSWERED)))
                for a in world.attempts[1:]
            ]
            await asyncio.sleep(0)
            first.cancel()
            others[0].cancel()  # still queued: withdrawn
            release.set()
            with pytest.raises(asyncio.CancelledError):
                await first
            return list(await asyncio.gather(*others[1:]))

    results = asyncio.run(main())
    assert all(r.effect is Effect.APPLIED for r in results)
    stats = world.service.stats(WS, world.campaign_id)
    # the cancelled handler's batch went on; the withdrawn event was never applied
    assert (stats.completed, stats.in_flight) == (len(PHONES) - 1, 1)


def test_events_queued_when_the_applier_is_cancelled_fail_clearly() -> None:
    world = World(InMemoryRepository())
    release = threading.Event()

    def slow(events: Sequence[CallEvent]) -> list[EventResult | Exception]:
        release.wait(5)
        return world.service.apply_events(events)

    async def main() -> list[EventResult | BaseException]:
        applier = EventApplier(slow)
        await applier.start()
        handlers = [asyncio.ensure_future(applier.apply(ended(world.attempts[0], ANSWERED)))]
        await asyncio.sleep(0.01)  # its batch is in the worker thread
        handlers += [
            asyncio.ensure_future(applier.apply(ended(a, ANSWERED))) for a in world.attempts[1:]
        ]
        await asyncio.sleep(0)  # queued
        assert applier._task is not None
        applier._task.cancel()  # e.g. the loop shutting down under it
        release.set()
        return list(await asyncio.gather(*handlers, return_exceptions=True))

    results = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in results)
    assert "may have been applied" in str(results[0])
    assert "before this event was applied" in str(results[-1])

"""One dispatch round (snapshot, plan, claim): what its cheaper paths rely on."""

from __future__ import annotations

import os
import threading
import uuid
from datetime import datetime, timedelta

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.repository_contract import T0, make_campaign, make_recipient, phone
from outdial import dispatch
from outdial.campaign import Campaign, CampaignStatus
from outdial.dispatch import Claim, DialerCore
from outdial.engine import Dial, Engine, EngineConfig, Plan
from outdial.errors import InvalidTransition
from outdial.ports import DialStats, PlacedCall
from outdial.recipient import RECIPIENT_TRANSITIONS, Recipient, RecipientStatus
from outdial.testing import InMemoryRepository

_0 = timedelta(0)


def test_attempt_ids_are_the_uuid4_hex_of_the_random_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for raw in (bytes(16), b"\xff" * 16, bytes(range(16)), os.urandom(16)):
        dispatch._IDS.clear()
        monkeypatch.setattr(os, "urandom", lambda n, raw=raw: raw * (n // 16))
        ids = [dispatch._uuid4_hex() for _ in range(dispatch._IDS_PER_READ)]
        assert ids == [uuid.UUID(bytes=raw, version=4).hex] * dispatch._IDS_PER_READ
    monkeypatch.undo()
    dispatch._IDS.clear()
    ids = [dispatch._uuid4_hex() for _ in range(3 * dispatch._IDS_PER_READ + 5)]
    assert len(set(ids)) == len(ids)  # across several reads of the pool
    assert all(uuid.UUID(i).version == 4 and uuid.UUID(i).variant == uuid.RFC_4122 for i in ids)


def test_threads_taking_attempt_ids_at_once_never_share_one() -> None:
    dispatch._IDS.clear()
    taken: list[list[str]] = [[] for _ in range(4)]

    def take(into: list[str]) -> None:
        for _ in range(2000):
            into.append(dispatch._uuid4_hex())

    threads = [threading.Thread(target=take, args=(t,)) for t in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for ids in taken for i in ids]
    assert len(every) == 8000
    assert len(set(every)) == 8000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_process_does_not_reuse_its_parents_attempt_ids() -> None:
    dispatch._IDS.clear()
    dispatch._uuid4_hex()  # the pool now holds ids the child would inherit
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its next ids and leave at once
        os.close(read)
        os.write(write, "".join(dispatch._uuid4_hex() for _ in range(3)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read()
    os.waitpid(pid, 0)
    ours = "".join(dispatch._uuid4_hex() for _ in range(3))
    assert len(child) == len(ours) == 96
    assert child != ours


@pytest.mark.parametrize("spacing", [timedelta(0), timedelta(seconds=-5)])
def test_without_pacing_only_concurrency_limits_a_campaign(spacing: timedelta) -> None:
    campaign = make_campaign(concurrency_limit=7, min_spacing=spacing)
    stats = DialStats(starts_since_minute=(T0,) * 50, last_start_at=T0, starts_today=500)
    engine = Engine()
    assert engine.campaign_capacity(campaign, 3, stats, T0) == (4, None)
    assert engine.campaign_capacity(campaign, 7, stats, T0) == (0, None)
    assert not engine.needs_dial_stats(campaign)


def test_a_daily_cap_still_limits_a_campaign_with_free_slots() -> None:
    campaign = make_campaign(concurrency_limit=7, daily_cap=10)
    engine = Engine()
    assert engine.campaign_capacity(campaign, 0, DialStats(starts_today=8), T0) == (2, None)
    free, wake = engine.campaign_capacity(campaign, 0, DialStats(starts_today=10), T0)
    assert free == 0
    assert wake is not None
    assert wake > T0


def _active(campaign: Campaign) -> Campaign:
    return attrs.evolve(campaign, status=CampaignStatus.ACTIVE, started_at=T0)


def test_a_rounds_plan_dials_and_claims_are_ordinary_values() -> None:
    repo = InMemoryRepository()
    campaign = _active(make_campaign(concurrency_limit=2))
    with repo.transaction() as uow:
        uow.add_campaign(campaign)
        uow.add_recipients([make_recipient(campaign, phone(n)) for n in range(3)])
    claims, plan = DialerCore(repo, new_id=iter(["a1", "a2"]).__next__).dispatch(T0)
    assert type(plan) is Plan
    assert plan == Plan(plan.transitions, plan.dials, plan.skips, plan.defers, plan.wake_at)
    assert [type(d) for d in plan.dials] == [Dial, Dial]
    assert plan.dials[0] == Dial(campaign.id, plan.dials[0].recipient, 1)
    assert attrs.evolve(plan, wake_at=T0).wake_at == T0
    assert [type(c) for c in claims] == [Claim, Claim]
    assert claims[0] == Claim(claims[0].attempt, claims[0].request, campaign.agent.provider)
    assert [c.attempt.id for c in claims] == ["a1", "a2"]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        plan.dials[0].attempt_number = 5  # type: ignore[misc]


def test_the_snapshot_carries_the_capacity_its_candidates_were_sized_with() -> None:
    repo = InMemoryRepository()
    dialing = _active(make_campaign(concurrency_limit=2))
    paused = attrs.evolve(make_campaign(concurrency_limit=2), status=CampaignStatus.PAUSED)
    with repo.transaction() as uow:
        for c in (dialing, paused):
            uow.add_campaign(c)
            uow.add_recipients([make_recipient(c, phone(n)) for n in range(6)])
    core = DialerCore(repo)
    with repo.transaction() as uow:
        snapshot = core.load_snapshot(uow, T0)
    by_id = {cs.campaign.id: cs for cs in snapshot.campaigns}
    loaded = by_id[dialing.id]
    assert (
        loaded.capacity
        == core.engine.campaign_capacity(dialing, 0, loaded.dial_stats, T0)
        == (2, None)
    )
    assert len(loaded.candidates) == core.engine.candidates_wanted(dialing, 2) == 4
    assert by_id[paused.id].capacity is None  # not dialing: nothing was sized
    # the plan from it is the plan the engine makes when it computes the capacity itself
    recomputed = attrs.evolve(
        snapshot, campaigns=tuple(attrs.evolve(cs, capacity=None) for cs in snapshot.campaigns)
    )
    assert core.engine.plan(T0, snapshot) == core.engine.plan(T0, recomputed)


@pytest.mark.parametrize("status", list(RecipientStatus))
def test_a_claim_moves_only_a_recipient_the_table_lets_become_queued(
    status: RecipientStatus,
) -> None:
    repo = InMemoryRepository()
    campaign = _active(make_campaign())
    with repo.transaction() as uow:
        uow.add_campaign(campaign)
        uow.add_recipients([attrs.evolve(make_recipient(campaign, phone(1)), status=status)])
        [r] = uow.list_recipients(campaign.id).items
    plan = Plan(dials=(Dial(campaign.id, r, r.attempts + 1),))
    core = DialerCore(repo, new_id=iter(["a1"]).__next__)
    with repo.transaction() as uow:
        if (status, RecipientStatus.QUEUED) in RECIPIENT_TRANSITIONS:
            [claim] = core.apply_plan(uow, plan, T0, [])
            assert claim.attempt.recipient_id == r.id
            assert uow.get_recipient(r.id).status is RecipientStatus.QUEUED
        else:
            with pytest.raises(InvalidTransition):
                core.apply_plan(uow, plan, T0, [])
    assert (RecipientStatus.PENDING, RecipientStatus.QUEUED) in RECIPIENT_TRANSITIONS


def _defer_then_fail(repo: InMemoryRepository, recipient: Recipient, until: datetime) -> None:
    """Defer ``recipient`` in a savepoint that then fails (undone: its queue entry is
    pushed again, a duplicate of the one still there)."""
    with repo.transaction() as savepoint:
        savepoint.save_recipient(attrs.evolve(recipient, next_attempt_at=until), recipient)
        raise KeyError("the defer fails")


_DUE = st.sampled_from([None, -1, 5, 10])  # minutes after T0 (None: due at once)
_STEP = st.tuples(
    st.sampled_from([0, 5, 10, 15]),  # look at T0 + this many minutes
    st.integers(1, 5),  # for this many
    # then do this with one of those found (a defer undone by its savepoint pushes the
    # recipient's entry again: a duplicate entry)
    st.sampled_from(["claim", "defer", "defer undone", "nothing"]),
    st.integers(0, 4),  # that one: the first found, the second (or the last), ...
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2), _DUE), min_size=1, max_size=12),
    st.lists(_STEP, min_size=1, max_size=8),
)
def test_due_recipients_are_the_first_due_pending_in_priority_then_insertion_order(
    people: list[tuple[int, int | None]], steps: list[tuple[int, int, str, int]]
) -> None:
    repo = InMemoryRepository()
    campaign = make_campaign()
    with repo.transaction() as uow:
        uow.add_campaign(campaign)
        uow.add_recipients(
            [
                make_recipient(
                    campaign,
                    phone(n),
                    priority=priority,
                    next_attempt_at=None if due is None else T0 + timedelta(minutes=due),
                )
                for n, (priority, due) in enumerate(people)
            ]
        )
    for minutes, limit, then, which in steps:
        now = T0 + timedelta(minutes=minutes)
        with repo.transaction() as uow:
            everyone = [uow.get_recipient(r.id) for r in uow.list_recipients(campaign.id).items]
            expected = sorted(
                (
                    r
                    for r in everyone
                    if r.status is RecipientStatus.PENDING
                    and (r.next_attempt_at is None or r.next_attempt_at <= now)
                ),
                key=lambda r: (-r.priority, r.seq),
            )[:limit]
            found = uow.due_recipients(campaign.id, now, limit)
            assert [r.id for r in found] == [r.id for r in expected]
            assert uow.due_recipients(campaign.id, now, limit) == found  # looking claims nothing
            if found and then != "nothing":
                one: Recipient = found[min(which, len(found) - 1)]
                if then == "claim":
                    new = one.moved_to(RecipientStatus.QUEUED, attempts=1, updated_at=now)
                    uow.save_recipient(new, one)
                elif then == "defer":
                    new = attrs.evolve(one, next_attempt_at=now + timedelta(minutes=5))
                    uow.save_recipient(new, one)
                else:
                    with pytest.raises(KeyError):
                        _defer_then_fail(repo, one, now + timedelta(minutes=5))


@pytest.mark.parametrize(
    ("confirm", "call"),
    [
        (timedelta(minutes=2), timedelta(hours=2)),  # the defaults
        (timedelta(hours=3), timedelta(minutes=1)),  # the call timeout is the shorter
        (timedelta(0), timedelta(0)),
        (timedelta(seconds=-30), timedelta(hours=1)),
    ],
)
def test_unfinished_gives_exactly_the_attempts_the_engine_would_reconcile(
    confirm: timedelta, call: timedelta
) -> None:
    repo = InMemoryRepository()
    campaign = _active(make_campaign(concurrency_limit=6))
    with repo.transaction() as uow:
        uow.add_campaign(campaign)
        uow.add_recipients([make_recipient(campaign, phone(n)) for n in range(6)])
    config = EngineConfig(dial_confirm_timeout=confirm, call_timeout=call, max_dials_per_round=1)
    core = DialerCore(repo, Engine(config), worker_id="me")
    assert core.engine.reconcile_age() == min(confirm, call)
    created = []
    for k in range(6):  # one attempt every 37 s; every other one placed (the others dialing)
        at = T0 + timedelta(seconds=37 * k)
        (claim,), _ = core.dispatch(at)
        if k % 2:
            core.record_placed(at, claim, PlacedCall("fake", f"call-{k}"))
        created.append(at)
    # around each instant an attempt becomes old enough, to the microsecond
    tick = timedelta(microseconds=1)
    instants = sorted(
        at + timeout + d for at in created for timeout in (confirm, call) for d in (-tick, _0, tick)
    )
    for now in instants:
        with repo.transaction() as uow:
            every = uow.unfinished_attempts(started_before=now)
        expected = [a for a in every if core.engine.needs_reconcile(a, now)]
        assert core.unfinished(now) == expected
        # after a restart, this worker's own attempts too, whatever their age
        assert core.unfinished(now, own_only=True) == every


def test_no_attempt_younger_than_the_reconcile_age_needs_a_reconcile() -> None:
    repo = InMemoryRepository()
    campaign = _active(make_campaign(concurrency_limit=2))
    with repo.transaction() as uow:
        uow.add_campaign(campaign)
        uow.add_recipients([make_recipient(campaign, phone(n)) for n in range(2)])
    core = DialerCore(repo)
    dialing, placed = core.dispatch(T0)[0]
    core.record_placed(T0, placed, PlacedCall("fake", "call-1"))
    with repo.transaction() as uow:
        attempts = [uow.get_attempt(c.attempt.id) for c in (dialing, placed)]
    engine = core.engine
    for timeouts in [(timedelta(minutes=2), timedelta(hours=2)), (timedelta(hours=1), _0)]:
        engine.config = EngineConfig(dial_confirm_timeout=timeouts[0], call_timeout=timeouts[1])
        age = engine.reconcile_age()
        for a in attempts:
            assert a is not None
            assert not engine.needs_reconcile(a, T0 + age - timedelta(microseconds=1))
        # and it is the youngest: the attempt with the shorter timeout needs one at that age
        assert any(a is not None and engine.needs_reconcile(a, T0 + age) for a in attempts)


@pytest.mark.parametrize("timeout", [timedelta.max, timedelta.min])
def test_unfinished_with_timeouts_beyond_the_calendar(timeout: timedelta) -> None:
    repo = InMemoryRepository()
    campaign = _active(make_campaign(concurrency_limit=2))
    with repo.transaction() as uow:
        uow.add_campaign(campaign)
        uow.add_recipients([make_recipient(campaign, phone(n)) for n in range(2)])
    config = EngineConfig(dial_confirm_timeout=timeout, call_timeout=timeout)
    core = DialerCore(repo, Engine(config))
    claims, _ = core.dispatch(T0)
    now = T0 + timedelta(days=1)
    found = core.unfinished(now)
    # never (the maximum: no attempt is that old), or always (the minimum)
    assert [a.id for a in found] == ([] if timeout > _0 else [c.attempt.id for c in claims])
    with repo.transaction() as uow:
        every = uow.unfinished_attempts(started_before=now)
    assert found == [a for a in every if core.engine.needs_reconcile(a, now)]

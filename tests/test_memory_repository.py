"""The in-memory repository: the repository contract plus what only it promises."""

from __future__ import annotations

import gc
import heapq
import threading
import weakref
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.repository_contract import (
    T0,
    RepositoryContract,
    make_attempt,
    make_campaign,
    make_recipient,
    phone,
)
from outdial.campaign import Campaign, CampaignCounters, CampaignStatus
from outdial.errors import RepositoryError, StaleClaim
from outdial.outcomes import CallOutcome
from outdial.ports import Repository, UnitOfWork
from outdial.recipient import Attempt, AttemptStatus, Recipient, RecipientStatus
from outdial.testing import InMemoryRepository


class TestInMemoryRepository(RepositoryContract):
    @pytest.fixture
    def repo(self) -> Repository:
        return InMemoryRepository()


def test_the_in_memory_repository_does_no_io() -> None:
    assert InMemoryRepository().blocking is False


def test_a_unit_of_work_is_closed_after_its_block() -> None:
    repo = InMemoryRepository()
    with repo.transaction() as uow:
        uow.add_campaign(make_campaign())
    with pytest.raises(RepositoryError, match="closed"):
        uow.dispatchable_campaigns()


_Call = Callable[[UnitOfWork, Campaign, Recipient], object]
_EVERY_METHOD: dict[str, _Call] = {
    "add_campaign": lambda uow, c, r: uow.add_campaign(make_campaign()),
    "get_campaign": lambda uow, c, r: uow.get_campaign(c.id),
    "get_campaign_settings": lambda uow, c, r: uow.get_campaign_settings(c.id),
    "save_campaign": lambda uow, c, r: uow.save_campaign(c),
    "list_campaigns": lambda uow, c, r: uow.list_campaigns(c.workspace_id),
    "find_recent_draft": lambda uow, c, r: uow.find_recent_draft(c.workspace_id, None, T0),
    "dispatchable_campaigns": lambda uow, c, r: uow.dispatchable_campaigns(),
    "add_recipients": lambda uow, c, r: uow.add_recipients([make_recipient(c, phone(9))]),
    "get_recipient": lambda uow, c, r: uow.get_recipient(r.id),
    "save_recipient": lambda uow, c, r: uow.save_recipient(r.moved_to(RecipientStatus.QUEUED), r),
    "list_recipients": lambda uow, c, r: uow.list_recipients(c.id),
    "due_recipients": lambda uow, c, r: uow.due_recipients(c.id, T0, 5),
    "next_due_at": lambda uow, c, r: uow.next_due_at(c.id, T0),
    "skip_pending": lambda uow, c, r: uow.skip_pending(c.id, "stop", T0),
    "outcome_counts": lambda uow, c, r: uow.outcome_counts(c.id),
    "duration_totals": lambda uow, c, r: uow.duration_totals(c.id),
    "add_attempt": lambda uow, c, r: uow.add_attempt(make_attempt(r)),
    "add_claims": lambda uow, c, r: uow.add_claims(
        [(make_attempt(r), r.moved_to(RecipientStatus.QUEUED, attempts=1), r)]
    ),
    "get_attempt": lambda uow, c, r: uow.get_attempt("a-1"),
    "find_attempt": lambda uow, c, r: uow.find_attempt("fake", "call-1"),
    "save_attempt": lambda uow, c, r: uow.save_attempt(make_attempt(r, id="a-1")),
    "attempts_for": lambda uow, c, r: uow.attempts_for(r.id),
    "attempt_starts": lambda uow, c, r: uow.attempt_starts([r.id], T0),
    "in_flight": lambda uow, c, r: uow.in_flight(),
    "dial_stats": lambda uow, c, r: uow.dial_stats(c.id, T0, T0),
    "unfinished_attempts": lambda uow, c, r: uow.unfinished_attempts(started_before=T0),
    "suppress": lambda uow, c, r: uow.suppress(c.workspace_id, r.phone, "opted out", T0),
    "unsuppress": lambda uow, c, r: uow.unsuppress(c.workspace_id, r.phone),
    "suppressed": lambda uow, c, r: uow.suppressed(c.workspace_id, [r.phone]),
}


def test_every_method_of_the_port_is_in_the_closed_unit_of_work_test() -> None:
    methods = {name for name in vars(UnitOfWork) if not name.startswith("_")}
    assert methods == set(_EVERY_METHOD)


@pytest.mark.parametrize("method", sorted(_EVERY_METHOD))
def test_every_method_of_a_closed_unit_of_work_refuses_and_changes_nothing(
    method: str,
) -> None:
    repo = InMemoryRepository()
    campaign = make_campaign()
    with repo.transaction() as uow:
        uow.add_campaign(campaign)
        uow.add_recipients([make_recipient(campaign, phone(1))])
        uow.add_attempt(make_attempt(uow.list_recipients(campaign.id).items[0], id="a-1"))
    with repo.transaction() as uow:
        (recipient,) = uow.list_recipients(campaign.id).items
        stored = uow.get_campaign(campaign.id)
        before = (stored, recipient, uow.attempts_for(recipient.id), uow.in_flight())
    with pytest.raises(RepositoryError, match="closed"):
        _EVERY_METHOD[method](uow, stored, recipient)
    with repo.transaction() as uow:
        after = (
            uow.get_campaign(campaign.id),
            uow.get_recipient(recipient.id),
            uow.attempts_for(recipient.id),
            uow.in_flight(),
        )
        assert after == before
        assert uow.suppressed(campaign.workspace_id, [recipient.phone]) == set()


def test_a_savepoint_shares_the_outer_unit_of_work_until_the_outer_block_ends() -> None:
    repo = InMemoryRepository()
    campaign = make_campaign()
    with repo.transaction() as outer:
        outer.add_campaign(campaign)
        with repo.transaction() as savepoint:
            assert savepoint is outer
            savepoint.add_recipients([make_recipient(campaign, phone(1))])
        assert savepoint.get_campaign(campaign.id).counters.total == 1  # still open
    with pytest.raises(RepositoryError, match="closed"):
        savepoint.get_campaign(campaign.id)


def test_transactions_are_serialised_across_threads() -> None:
    repo = InMemoryRepository()
    campaign = make_campaign()
    inside = threading.Event()
    release = threading.Event()
    seen: list[int] = []

    def writer() -> None:
        with repo.transaction() as uow:
            uow.add_campaign(campaign)
            uow.add_recipients([make_recipient(campaign, phone(1))])
            inside.set()
            release.wait(5)
            uow.add_recipients([make_recipient(campaign, phone(2))])

    def reader() -> None:
        with repo.transaction(dispatch_lock=True) as uow:
            seen.append(uow.get_campaign(campaign.id).counters.total)

    w = threading.Thread(target=writer)
    w.start()
    assert inside.wait(5)
    r = threading.Thread(target=reader)
    r.start()
    r.join(0.2)
    assert r.is_alive(), "the reader must wait for the writer's transaction"
    release.set()
    w.join(5)
    r.join(5)
    assert seen == [2]


def test_a_nested_transaction_rolls_back_only_its_own_changes() -> None:
    repo = InMemoryRepository()
    campaign = make_campaign()

    def failing_inner_block() -> None:
        with repo.transaction() as inner:
            inner.add_recipients([make_recipient(campaign, phone(2))])
            raise KeyError("inner fails")

    with repo.transaction() as outer:
        outer.add_campaign(campaign)
        outer.add_recipients([make_recipient(campaign, phone(1))])
        with pytest.raises(KeyError):
            failing_inner_block()
        outer.add_recipients([make_recipient(campaign, phone(3))])
    with repo.transaction() as uow:
        stored = uow.list_recipients(campaign.id).items
        assert [r.phone for r in stored] == [phone(1), phone(3)]
        assert uow.get_campaign(campaign.id).counters == CampaignCounters(total=2, pending=2)


def test_savepoints_in_savepoints_roll_back_down_to_where_each_began() -> None:
    repo = InMemoryRepository()
    campaign = make_campaign()

    def add(uow: UnitOfWork, n: int) -> None:
        uow.add_recipients([make_recipient(campaign, phone(n))])

    def failing_savepoint(n: int) -> None:
        with repo.transaction() as uow:
            add(uow, n)
            raise KeyError(n)

    def savepoint_failing_after_its_own_savepoint(n: int) -> None:
        with repo.transaction() as uow:
            add(uow, n)
            with repo.transaction() as inner:
                add(inner, n + 1)  # committed to this savepoint, then undone with it
            raise KeyError(n)

    with repo.transaction() as outer:
        outer.add_campaign(campaign)
        add(outer, 1)
        with repo.transaction() as middle:
            add(middle, 2)
            with pytest.raises(KeyError):
                failing_savepoint(3)
            add(middle, 4)
        with pytest.raises(KeyError):
            savepoint_failing_after_its_own_savepoint(5)
        add(outer, 7)
    with repo.transaction() as uow:
        stored = uow.list_recipients(campaign.id).items
        assert [r.phone for r in stored] == [phone(1), phone(2), phone(4), phone(7)]
        assert uow.get_campaign(campaign.id).counters.total == 4
    with pytest.raises(KeyError):
        failing_savepoint(8)  # here an outermost block
    with repo.transaction() as uow:
        assert uow.get_campaign(campaign.id).counters.total == 4


def test_an_earlier_now_after_a_later_one_is_answered_correctly() -> None:
    repo = InMemoryRepository()
    campaign = make_campaign()
    soon, later = T0 + timedelta(minutes=5), T0 + timedelta(minutes=50)
    recipients = [
        make_recipient(campaign, phone(1), next_attempt_at=soon),
        make_recipient(campaign, phone(2), next_attempt_at=later),
    ]
    with repo.transaction() as uow:
        uow.add_campaign(campaign)
        uow.add_recipients(recipients)
        assert len(uow.due_recipients(campaign.id, T0 + timedelta(hours=1), 10)) == 2
        # A clock that reads earlier (another worker's) sees only what is due then.
        assert uow.next_due_at(campaign.id, T0) == soon
        assert uow.due_recipients(campaign.id, T0, 10) == []
        assert uow.next_due_at(campaign.id, soon) == later
        assert [r.phone for r in uow.due_recipients(campaign.id, soon, 10)] == [phone(1)]
        assert len(uow.due_recipients(campaign.id, later, 10)) == 2


def _entries_inspected_to_claim(size: int, monkeypatch: pytest.MonkeyPatch) -> int:
    """How many queue entries ``due_recipients`` pops to find 50 of ``size``, after
    half the campaign was claimed and a quarter deferred (stale entries left behind)."""
    repo = InMemoryRepository()
    campaign = make_campaign()
    with repo.transaction() as uow:
        uow.add_campaign(campaign)
        uow.add_recipients(
            [make_recipient(campaign, phone(n), priority=n % 3) for n in range(size)]
        )
        for r in uow.due_recipients(campaign.id, T0, size // 2):
            uow.save_recipient(r.moved_to(RecipientStatus.QUEUED), r)
    calls = 0
    original = heapq.heappop

    def counting(heap: list[Any]) -> Any:
        nonlocal calls
        calls += 1
        return original(heap)

    with repo.transaction() as uow:
        uow.due_recipients(campaign.id, T0, 100)  # drops the claimed entries once
        monkeypatch.setattr(heapq, "heappop", counting)
        due = uow.due_recipients(campaign.id, T0, 50)
    monkeypatch.undo()
    assert len(due) == 50
    return calls


def test_a_claimed_recipient_leaves_the_ready_queue_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A dialer with one free slot looks at two due recipients and claims the first:
    # the claim drops the first one's entry, so the next look pops nothing (the first
    # one is read on the top of the heap, the second among the top's two children).
    repo = InMemoryRepository()
    campaign = make_campaign()
    with repo.transaction() as uow:
        uow.add_campaign(campaign)
        uow.add_recipients([make_recipient(campaign, phone(n)) for n in range(10)])
    pops = 0
    original = heapq.heappop

    def counting(heap: list[Any]) -> Any:
        nonlocal pops
        pops += 1
        return original(heap)

    claimed: list[str] = []
    with repo.transaction() as uow:
        for _ in range(5):
            monkeypatch.setattr(heapq, "heappop", counting)
            pops = 0
            first, second = uow.due_recipients(campaign.id, T0, 2)
            monkeypatch.undo()
            assert pops == 0
            uow.save_recipient(first.moved_to(RecipientStatus.QUEUED, attempts=1), first)
            claimed.append(first.phone)

        def claim_then_fail() -> None:
            with repo.transaction() as savepoint:
                (due,) = savepoint.due_recipients(campaign.id, T0, 1)
                savepoint.save_recipient(due.moved_to(RecipientStatus.QUEUED, attempts=1), due)
                raise KeyError("the claim fails")

        with pytest.raises(KeyError):
            claim_then_fail()
        again = uow.due_recipients(campaign.id, T0, 10)
    assert claimed == [phone(n) for n in range(5)]
    assert [r.phone for r in again] == [phone(n) for n in range(5, 10)]


def test_claim_work_does_not_grow_with_campaign_size(monkeypatch: pytest.MonkeyPatch) -> None:
    small = _entries_inspected_to_claim(1_000, monkeypatch)
    large = _entries_inspected_to_claim(10_000, monkeypatch)
    # 50 entries inspected: 49 popped, the last one read on the top of the heap
    assert small == large == 49


def test_values_a_transaction_replaced_are_freed_without_the_garbage_collector() -> None:
    # The undo journal refers to the unit of work, which refers to the journal: the
    # cycle is broken when the transaction ends, so replaced values are freed at once
    # (left to the collector, they were promoted and made it walk the whole store).
    repo = InMemoryRepository()
    campaign = make_campaign()
    with repo.transaction() as uow:
        uow.add_campaign(campaign)
        uow.add_recipients([make_recipient(campaign, phone(1))])
    with repo.transaction() as uow:
        (old,) = uow.due_recipients(campaign.id, T0, 1)
        gone = weakref.ref(old)
    gc.disable()
    try:
        with repo.transaction() as uow, repo.transaction() as savepoint:
            savepoint.save_recipient(old.moved_to(RecipientStatus.QUEUED), old)
        del old, uow, savepoint
        assert gone() is None
    finally:
        gc.enable()


def _one_recipient() -> tuple[InMemoryRepository, Campaign, Recipient]:
    """A repository holding one campaign with one pending recipient."""
    repo = InMemoryRepository()
    campaign = make_campaign()
    rec = make_recipient(campaign, phone(1))
    with repo.transaction() as uow:
        uow.add_campaign(campaign)
        uow.add_recipients([rec])
    return repo, campaign, rec


def test_attempts_for_sorts_attempts_recorded_out_of_order() -> None:
    from outdial.recipient import Attempt

    repo, campaign, rec = _one_recipient()
    with repo.transaction() as uow:
        for number in (2, 1, 3):
            uow.add_attempt(
                Attempt(f"a{number}", campaign.id, rec.id, rec.workspace_id, number, rec.phone, T0)
            )
        assert [a.number for a in uow.attempts_for(rec.id)] == [1, 2, 3]


def _three_attempts() -> tuple[InMemoryRepository, Recipient, Recipient, list[Attempt]]:
    """A repository with two recipients, the first with attempts 1, 2 and 3 (ended)."""
    repo = InMemoryRepository()
    campaign = make_campaign()
    mine, other = make_recipient(campaign, phone(1)), make_recipient(campaign, phone(2))
    calls = [_ended(make_attempt(mine, n, created_at=T0 + timedelta(hours=n))) for n in (1, 2, 3)]
    with repo.transaction() as uow:
        uow.add_campaign(campaign)
        uow.add_recipients([mine, other])
        for call in calls:
            uow.add_attempt(call)
    return repo, mine, other, calls


@pytest.mark.parametrize("moved", [0, 1, 2])
def test_an_attempt_given_to_another_recipient_leaves_the_first_ones_attempts(moved: int) -> None:
    repo, mine, other, calls = _three_attempts()
    given = attrs.evolve(calls[moved], recipient_id=other.id, phone=other.phone)

    def give_then_fail() -> None:
        with repo.transaction() as uow:
            uow.save_attempt(given)
            raise KeyError("rolled back")

    with pytest.raises(KeyError):
        give_then_fail()
    with repo.transaction() as uow:
        assert uow.attempts_for(mine.id) == calls
        assert uow.attempts_for(other.id) == []
        uow.save_attempt(given)
    with repo.transaction() as uow:
        assert uow.attempts_for(mine.id) == calls[:moved] + calls[moved + 1 :]
        assert uow.attempts_for(other.id) == [given]
        later = _ended(make_attempt(mine, 4, created_at=T0 + timedelta(hours=4)))
        uow.add_attempt(later)
        assert uow.attempts_for(mine.id) == [*calls[:moved], *calls[moved + 1 :], later]
        assert uow.attempt_starts([mine.id], T0)[mine.id] == [
            a.created_at for a in uow.attempts_for(mine.id)
        ]


def test_attempts_added_by_a_failed_block_leave_the_recipients_attempts_as_they_were() -> None:
    repo, mine, other, calls = _three_attempts()

    def add_then_fail() -> None:
        with repo.transaction() as uow:
            uow.add_attempt(make_attempt(mine, 4))
            uow.add_attempt(make_attempt(other, 1))
            uow.add_attempt(make_attempt(mine, 5))
            raise KeyError("rolled back")

    with pytest.raises(KeyError):
        add_then_fail()
    with repo.transaction() as uow:
        assert uow.attempts_for(mine.id) == calls
        assert uow.attempts_for(other.id) == []


def test_a_recipients_attempts_are_indexed_without_a_tracked_object_per_attempt() -> None:
    # The attempt ids per recipient are kept in dicts of strings: a tuple (or list) of
    # them would be a tracked object, rebuilt on each attempt, that the collector counts
    # towards its next young collection and walks until it untracks it.
    repo, mine, other, calls = _three_attempts()
    ids = {a.id for a in calls}
    assert [a.id for a in _attempts_of(repo, mine)] == [a.id for a in calls]
    held = [
        o
        for o in gc.get_objects()
        if isinstance(o, tuple | list) and o and all(isinstance(i, str) and i in ids for i in o)
    ]
    assert held == []


def _attempts_of(repo: InMemoryRepository, recipient: Recipient) -> list[Attempt]:
    with repo.transaction() as uow:
        return uow.attempts_for(recipient.id)


def test_attempts_for_orders_attempts_of_one_number_by_creation() -> None:
    repo, campaign, rec = _one_recipient()
    early, late = T0, T0 + timedelta(hours=1)
    with repo.transaction() as uow:
        for at in (late, early):  # the same number twice, the later one added first
            uow.add_attempt(make_attempt(rec, 1, created_at=at))
        uow.add_attempt(make_attempt(rec, 2, created_at=early))
        assert [(a.number, a.created_at) for a in uow.attempts_for(rec.id)] == [
            (1, early),
            (1, late),
            (2, early),
        ]


def test_in_flight_counts_are_handed_out_again_only_while_they_are_the_same() -> None:
    repo = InMemoryRepository()
    campaign, other = make_campaign(), make_campaign()
    with repo.transaction() as uow:
        uow.add_campaign(campaign)
        uow.add_campaign(other)
        uow.add_recipients([make_recipient(campaign, phone(n)) for n in (1, 2)])
        uow.add_recipients([make_recipient(other, phone(3))])
        first, second = uow.list_recipients(campaign.id).items
        (third,) = uow.list_recipients(other.id).items
    with repo.transaction() as uow:
        call = make_attempt(first)
        uow.add_attempt(call)
        one = uow.in_flight()
        assert (dict(one.by_campaign), one.total) == ({campaign.id: 1}, 1)
        # that call ends and the campaign's next one starts: the same counts, the same value
        uow.save_attempt(attrs.evolve(call, status=AttemptStatus.ENDED, ended_at=T0))
        uow.add_attempt(make_attempt(second))
        assert uow.in_flight() is one
        # same total, another campaign: a new value
        uow.save_attempt(
            attrs.evolve(uow.attempts_for(second.id)[0], status=AttemptStatus.ENDED, ended_at=T0)
        )
        uow.add_attempt(make_attempt(third))
        moved = uow.in_flight()
        assert (dict(moved.by_campaign), moved.total) == ({other.id: 1}, 1)
        assert dict(one.by_campaign) == {campaign.id: 1}  # what was handed out never changes

        def start_a_call_then_fail() -> None:
            with repo.transaction() as savepoint:
                savepoint.add_attempt(make_attempt(first, 2))
                assert savepoint.in_flight().total == 2
                raise KeyError("rolled back")

        with pytest.raises(KeyError):
            start_a_call_then_fail()
        assert uow.in_flight() == moved


# -- ended attempts and final recipients are kept as rows ------------------------------------
# (plain tuples of atomic values, which the garbage collector stops tracking; read back as
# new, equal values)


def _every_field_set(recipient: Recipient) -> Recipient:
    """``recipient`` completed, with a value in every field a row carries."""
    return attrs.evolve(
        recipient,
        first_name="Ada",
        last_name="Lovelace",
        email="ada@example.com",
        company="Engines",
        variables={"plan": "gold", "city": "London"},
        priority=3,
        time_zones=("Europe/London",),
        status=RecipientStatus.COMPLETED,
        outcome=CallOutcome.ANSWERED,
        attempts=2,
        next_attempt_at=None,
        last_attempt_at=T0,
        last_retry_delay_seconds=300.0,
        duration_seconds=42.5,
        external_call_id="CA-1",
        error="none",
        updated_at=T0 + timedelta(minutes=5),
    )


def _ended(attempt: Attempt) -> Attempt:
    """``attempt`` ended, with a value in every field a row carries."""
    return attrs.evolve(
        attempt,
        status=AttemptStatus.ENDED,
        external_call_id=f"CA-{attempt.id}",
        placed_at=T0,
        answered_at=T0 + timedelta(seconds=5),
        ended_at=T0 + timedelta(seconds=47),
        outcome=CallOutcome.ANSWERED,
        duration_seconds=42.5,
        error="none",
        last_sequence=4,
        worker_id="worker-1",
        claim_token=7,
        test_call=False,
    )


def _untracked(rows: Any) -> bool:
    # A tuple of atomic values is untracked by the first collection that sees it; one that
    # holds such tuples (a recipient's time zones, variables) by the next one.
    gc.collect()
    gc.collect()
    rows = list(rows)
    return bool(rows) and all(not gc.is_tracked(row) for row in rows)


def _each_stored_once(repo: InMemoryRepository) -> bool:
    """Whether every recipient and attempt is kept in one form only (value or row)."""
    s = repo._store
    return not (s.recipient_values.keys() & s.recipient_rows.keys()) and not (
        s.attempt_values.keys() & s.attempt_rows.keys()
    )


def test_an_ended_attempt_reads_back_equal_and_is_not_walked_by_the_collector() -> None:
    repo, campaign, rec = _one_recipient()
    call = make_attempt(rec)
    with repo.transaction() as uow:
        uow.add_attempt(call)
        assert uow.get_attempt(call.id) is call  # in flight: the value itself
        ended = _ended(call)
        uow.save_attempt(ended)
    with repo.transaction() as uow:
        first, again = uow.get_attempt(call.id), uow.get_attempt(call.id)
        assert first == ended == again
        assert first is not again  # a new value on each read: values are immutable anyway
        assert uow.find_attempt("fake", f"CA-{call.id}") == ended
        assert uow.attempts_for(rec.id) == [ended]
        assert uow.unfinished_attempts(started_before=T0 + timedelta(days=1)) == []
        assert uow.in_flight().total == 0
    assert _untracked(repo._store.attempt_rows.values())


def test_an_attempt_ended_by_a_failed_block_stays_in_flight() -> None:
    repo, campaign, rec = _one_recipient()
    call = make_attempt(rec)
    with repo.transaction() as uow:
        uow.add_attempt(_ended(make_attempt(rec, 2, created_at=T0 - timedelta(hours=1))))
        uow.add_attempt(call)

    def end_it_then_fail() -> None:
        with repo.transaction() as uow:
            uow.save_attempt(_ended(call))
            raise KeyError("rolled back")

    with pytest.raises(KeyError):
        end_it_then_fail()
    with repo.transaction() as uow:
        assert uow.get_attempt(call.id) is call
        assert uow.unfinished_attempts(started_before=T0 + timedelta(days=1)) == [call]
        assert [a.number for a in uow.attempts_for(rec.id)] == [1, 2]
        # an ended attempt can be taken back to in flight (a newer claim) and ended again
        taken = attrs.evolve(call, claim_token=1)
        uow.save_attempt(_ended(call))
        uow.save_attempt(attrs.evolve(_ended(call), status=AttemptStatus.PLACED, claim_token=8))
        assert uow.in_flight().total == 1
        with pytest.raises(StaleClaim):
            uow.save_attempt(taken)
    assert _each_stored_once(repo)


def test_a_final_recipient_reads_back_equal_and_is_not_walked_by_the_collector() -> None:
    repo, campaign, rec = _one_recipient()
    with repo.transaction() as uow:
        (pending,) = uow.due_recipients(campaign.id, T0, 5)
        done = _every_field_set(pending)
        uow.save_recipient(done, pending)
    assert _untracked(repo._store.recipient_rows.values())
    with repo.transaction() as uow:
        first, again = uow.get_recipient(rec.id), uow.get_recipient(rec.id)
        assert first == done == again and first is not again
        assert first.variables == {"plan": "gold", "city": "London"}
        assert uow.list_recipients(campaign.id).items == (done,)
        assert uow.list_recipients(campaign.id, search="ada@").items == (done,)
        assert uow.due_recipients(campaign.id, T0, 5) == []
        assert uow.get_campaign(campaign.id).counters.completed == 1
        # back to pending (a repository does not judge moves): a value again, and due
        uow.save_recipient(attrs.evolve(first, status=RecipientStatus.PENDING), first)
        assert uow.due_recipients(campaign.id, T0, 5)[0].status is RecipientStatus.PENDING
    assert _each_stored_once(repo)


def test_a_final_recipient_without_variables_keeps_the_shared_empty_map() -> None:
    repo, campaign, rec = _one_recipient()
    with repo.transaction() as uow:
        uow.skip_pending(campaign.id, "terminated", T0)
        skipped = uow.get_recipient(rec.id)
    assert skipped.status is RecipientStatus.SKIPPED and skipped.error == "terminated"
    assert skipped.variables is rec.variables  # the one empty map every recipient shares


def test_a_final_recipient_with_history_is_kept_with_it() -> None:
    repo, campaign, rec = _one_recipient()
    call = _ended(make_attempt(rec))
    with repo.transaction() as uow:
        done = attrs.evolve(_every_field_set(rec), history=(call,))
        uow.save_recipient(done, rec)
        assert uow.get_recipient(rec.id).history == (call,)


def test_recipients_finished_by_a_failed_block_are_pending_and_due_again() -> None:
    repo = InMemoryRepository()
    campaign = make_campaign()
    with repo.transaction() as uow:
        uow.add_campaign(campaign)
        uow.add_recipients([make_recipient(campaign, phone(n)) for n in range(3)])
        first, *others = uow.due_recipients(campaign.id, T0, 3)

    def finish_them_then_fail() -> None:
        with repo.transaction() as uow:
            uow.save_recipient(_every_field_set(first), first)
            uow.skip_pending(campaign.id, "terminated", T0)
            raise KeyError("rolled back")

    with pytest.raises(KeyError):
        finish_them_then_fail()
    with repo.transaction() as uow:
        assert uow.due_recipients(campaign.id, T0, 3) == [first, *others]
        assert uow.get_recipient(first.id) is first
        assert uow.get_campaign(campaign.id).counters.pending == 3
    assert _each_stored_once(repo)


def test_the_inspection_views_of_the_store_hold_every_recipient_and_attempt() -> None:
    repo = InMemoryRepository()
    campaign = make_campaign()
    recs = [make_recipient(campaign, phone(n)) for n in range(2)]
    calls = [make_attempt(rec) for rec in recs]
    with repo.transaction() as uow:
        uow.add_campaign(campaign)
        uow.add_recipients(recs)
        for call in calls:
            uow.add_attempt(call)
        uow.save_recipient(_every_field_set(recs[0]), recs[0])
        uow.save_attempt(_ended(calls[0]))
        stored = uow.list_recipients(campaign.id).items
    assert repo._store.recipients == {r.id: r for r in stored}
    assert repo._store.attempts == {calls[0].id: _ended(calls[0]), calls[1].id: calls[1]}


def test_attempts_in_flight_that_started_at_once_are_unfinished_in_the_order_added() -> None:
    repo = InMemoryRepository()
    campaign = make_campaign()
    recs = [make_recipient(campaign, phone(n)) for n in range(3)]
    calls = [make_attempt(rec) for rec in recs]  # all created at T0
    early = make_attempt(recs[0], number=2, created_at=T0 - timedelta(seconds=1))
    with repo.transaction() as uow:
        uow.add_campaign(campaign)
        uow.add_recipients(recs)
        for call in [*calls, early]:
            uow.add_attempt(call)
        uow.save_attempt(attrs.evolve(calls[0], status=AttemptStatus.PLACED))  # keeps its place
        found = uow.unfinished_attempts(started_before=T0 + timedelta(seconds=1))
    assert [a.id for a in found] == [early.id, calls[0].id, calls[1].id, calls[2].id]


def test_unfinished_attempts_added_in_start_order_are_found_up_to_the_bound() -> None:
    repo = InMemoryRepository()
    campaign = make_campaign()
    rec = make_recipient(campaign, phone(1))
    calls = [make_attempt(rec, number=n, created_at=T0 + timedelta(minutes=n)) for n in range(1, 5)]
    with repo.transaction() as uow:
        uow.add_campaign(campaign)
        uow.add_recipients([rec])
        for call in calls:
            uow.add_attempt(call)
        uow.save_attempt(_ended(calls[1]))
        found = uow.unfinished_attempts(started_before=T0 + timedelta(minutes=4))
    assert [a.id for a in found] == [calls[0].id, calls[2].id]
    assert not repo._store.late_starts  # all in start order: the early stop applies


def test_an_attempt_added_with_an_earlier_start_is_unfinished_until_it_ends() -> None:
    repo = InMemoryRepository()
    campaign = make_campaign()
    rec = make_recipient(campaign, phone(1))
    young = make_attempt(rec, number=1, created_at=T0)
    old = make_attempt(rec, number=2, created_at=T0 - timedelta(minutes=5))
    with repo.transaction() as uow:
        uow.add_campaign(campaign)
        uow.add_recipients([rec])
        uow.add_attempt(young)
        uow.add_attempt(old)  # after a younger one: found though the younger one is not
        found = uow.unfinished_attempts(started_before=T0)
        uow.save_attempt(_ended(old))
        after = uow.unfinished_attempts(started_before=T0 + timedelta(seconds=1))
    assert [a.id for a in found] == [old.id]
    assert [a.id for a in after] == [young.id]
    assert not repo._store.late_starts  # the late one ended: back to the early stop


class _Boom(Exception):
    pass


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["add", "end", "reopen", "restart", "resave"]),
            st.integers(0, 8),  # minutes after T0: a new start
            st.integers(0, 50),  # which attempt (modulo how many there are)
            st.booleans(),  # rolled back
        ),
        max_size=25,
    ),
    st.integers(0, 9),
)
def test_unfinished_attempts_are_every_attempt_in_flight_older_than_the_bound_oldest_first(
    steps: list[tuple[str, int, int, bool]], bound: int
) -> None:
    repo, _campaign, rec = _one_recipient()
    added: list[str] = []
    for kind, minutes, which, rolled_back in steps:
        start = T0 + timedelta(minutes=minutes)
        try:
            with repo.transaction() as uow:
                if kind == "add" or not added:
                    call = make_attempt(rec, number=len(added) + 1, created_at=start)
                    uow.add_attempt(call)
                    if not rolled_back:
                        added.append(call.id)
                else:
                    stored = uow.get_attempt(added[which % len(added)])
                    assert stored is not None
                    if kind == "end":
                        changed = _ended(stored)
                    elif kind == "reopen":  # (an ended one back in flight)
                        changed = attrs.evolve(stored, status=AttemptStatus.PLACED)
                    elif kind == "restart":  # another start: detached and attached again
                        changed = attrs.evolve(stored, created_at=start)
                    else:  # saved again as it is, but for a field the index ignores
                        changed = attrs.evolve(stored, last_sequence=stored.last_sequence + 1)
                    uow.save_attempt(changed)
                if rolled_back:
                    raise _Boom
        except _Boom:
            pass
    before = T0 + timedelta(minutes=bound)
    with repo.transaction() as uow:
        found = uow.unfinished_attempts(started_before=before)
    expected = [a for a in repo._store.attempts.values() if a.in_flight and a.created_at < before]
    assert sorted(a.id for a in found) == sorted(a.id for a in expected)
    starts = [a.created_at for a in found]
    assert starts == sorted(starts)


_Step = tuple[str, list[tuple[int, int | None]], int, int, int, bool]


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["add", "change", "claim", "look", "retry", "finish"]),
            st.lists(  # an added batch: priority, due minutes after T0 (None: due now)
                st.tuples(
                    st.sampled_from([0, 0, 0, 1, 2]), st.sampled_from([None, None, 0, 9, 18])
                ),
                min_size=1,
                max_size=4,
            ),
            st.integers(0, 50),  # which recipient (modulo how many there are)
            st.integers(0, 20),  # minutes after T0: ``now``
            st.integers(1, 4),  # limit
            st.booleans(),  # rolled back
        ),
        max_size=20,
    )
)
def test_due_recipients_are_the_pending_ones_due_by_priority_then_seq(
    steps: list[_Step],
) -> None:
    # A reference: the recipients as they should be stored; due_recipients must be its
    # pending ones that are due, by priority then seq, whatever entries the queue holds
    # (stale, duplicated, left by a rolled-back block, looked at by an earlier ``now``).
    repo = InMemoryRepository()
    campaign = make_campaign()
    with repo.transaction() as uow:
        uow.add_campaign(campaign)
    stored: dict[str, Recipient] = {}
    made = 0

    def expected(now: datetime, limit: int) -> list[Recipient]:
        due = [
            r
            for r in stored.values()
            if r.status is RecipientStatus.PENDING
            and (r.next_attempt_at is None or r.next_attempt_at <= now)
        ]
        return sorted(due, key=lambda r: (-r.priority, r.seq))[:limit]

    for kind, batch, which, minutes, limit, rolled_back in steps:
        now = T0 + timedelta(minutes=minutes)
        ids = sorted(stored)
        changed: dict[str, Recipient] = {}
        try:
            with repo.transaction() as uow:
                if kind == "add" or not ids:
                    new: list[Recipient] = []
                    for priority, due_minutes in batch:
                        made += 1
                        due = None if due_minutes is None else T0 + timedelta(minutes=due_minutes)
                        new.append(
                            make_recipient(
                                campaign, phone(made), priority=priority, next_attempt_at=due
                            )
                        )
                    uow.add_recipients(new)
                    changed = {r.id: uow.get_recipient(r.id) for r in new}
                elif kind in ("claim", "look"):
                    found = uow.due_recipients(campaign.id, now, limit)
                    assert found == expected(now, limit)
                    if kind == "claim" and found:
                        first = found[0]
                        claimed = first.moved_to(RecipientStatus.QUEUED, attempts=1)
                        uow.save_recipient(claimed, first)
                        changed = {first.id: claimed}
                else:
                    rec = stored[ids[which % len(ids)]]
                    if kind == "change" and rec.status is RecipientStatus.PENDING:
                        new_rec = attrs.evolve(  # a new priority or due time, or both
                            rec,
                            priority=which % 3 if which % 2 else rec.priority,
                            next_attempt_at=None
                            if minutes % 3 == 0
                            else now + timedelta(minutes=which % 7),
                        )
                    elif kind == "retry" and rec.status is RecipientStatus.QUEUED:
                        new_rec = rec.moved_to(
                            RecipientStatus.PENDING, next_attempt_at=now + timedelta(minutes=2)
                        )
                    elif kind == "finish" and rec.status is RecipientStatus.QUEUED:
                        new_rec = rec.moved_to(RecipientStatus.COMPLETED)
                    else:
                        new_rec = rec
                    uow.save_recipient(new_rec, rec)
                    changed = {rec.id: new_rec}
                if rolled_back:
                    raise _Boom
        except _Boom:
            changed = {}
        stored.update(changed)
        with repo.transaction() as uow:
            # now, then an earlier or later one (another worker's clock)
            for at in (now, T0 + timedelta(minutes=9), now + timedelta(minutes=1)):
                assert uow.due_recipients(campaign.id, at, limit) == expected(at, limit)
                later = [
                    r.next_attempt_at
                    for r in stored.values()
                    if r.status is RecipientStatus.PENDING
                    and r.next_attempt_at is not None
                    and r.next_attempt_at > at
                ]
                assert uow.next_due_at(campaign.id, at) == min(later, default=None)


def test_dispatchable_campaigns_carry_the_counters_of_the_moment() -> None:
    repo = InMemoryRepository()
    campaign = make_campaign(status=CampaignStatus.ACTIVE)
    rec = make_recipient(campaign, phone(1))
    with repo.transaction() as uow:
        uow.add_campaign(campaign)
        ((_, before),) = uow.dispatchable_campaigns()
        uow.add_recipients([rec])
        ((listed, after),) = uow.dispatchable_campaigns()
        ((_, again),) = uow.dispatchable_campaigns()
    assert listed.id == campaign.id
    assert (before.total, before.pending) == (0, 0)
    assert (after.total, after.pending) == (1, 1)
    assert again is after  # built once, until the counts move again

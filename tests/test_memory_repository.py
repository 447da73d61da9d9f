"""The in-memory repository: the repository contract plus what only it promises."""

from __future__ import annotations

import gc
import threading
import weakref
from datetime import timedelta

import pytest

from contract.repository_contract import (
    T0,
    RepositoryContract,
    make_campaign,
    make_recipient,
    phone,
)
from outdial.campaign import CampaignCounters
from outdial.errors import RepositoryError
from outdial.ports import Repository
from outdial.recipient import RecipientStatus
from outdial.testing import InMemoryRepository
from outdial.testing.memory import InMemoryUnitOfWork


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
    """How many queue entries ``due_recipients`` looks at to claim 50 of ``size``, after
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
    original = InMemoryUnitOfWork._pending_at

    def counting(self: InMemoryUnitOfWork, index: object, seq: int) -> object:
        nonlocal calls
        calls += 1
        return original(self, index, seq)  # type: ignore[arg-type]

    with repo.transaction() as uow:
        uow.due_recipients(campaign.id, T0, 100)  # drops the claimed entries once
        monkeypatch.setattr(InMemoryUnitOfWork, "_pending_at", counting)
        due = uow.due_recipients(campaign.id, T0, 50)
    monkeypatch.undo()
    assert len(due) == 50
    return calls


def test_claim_work_does_not_grow_with_campaign_size(monkeypatch: pytest.MonkeyPatch) -> None:
    small = _entries_inspected_to_claim(1_000, monkeypatch)
    large = _entries_inspected_to_claim(10_000, monkeypatch)
    assert small == large == 50


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


def test_attempts_for_sorts_attempts_recorded_out_of_order() -> None:
    from outdial.recipient import Attempt

    repo = InMemoryRepository()
    campaign = make_campaign()
    rec = make_recipient(campaign, phone(1))
    with repo.transaction() as uow:
        uow.add_campaign(campaign)
        uow.add_recipients([rec])
        for number in (2, 1, 3):
            uow.add_attempt(
                Attempt(f"a{number}", campaign.id, rec.id, rec.workspace_id, number, rec.phone, T0)
            )
        assert [a.number for a in uow.attempts_for(rec.id)] == [1, 2, 3]

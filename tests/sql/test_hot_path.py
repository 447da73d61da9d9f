"""The SQL repository's shortcuts on the apply path stay correct.

Applying a provider event reads the attempt, its recipient, its campaign and the
recipient's history in one row, reuses the campaign settings it decoded before
while the stored version is the same, and sends its transaction's BEGIN and
COMMIT to the driver itself. These tests pin what must not change: another
process's (or a rolled-back) campaign change is never served from the cache,
``attempts_for`` sees this transaction's own writes, and a pooled PostgreSQL
connection the server closed is replaced without an error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import attrs
import pytest
import sqlalchemy as sa

from contract.repository_contract import make_attempt, make_campaign, make_recipient, phone
from outdial.campaign import Campaign, CampaignStatus
from outdial.errors import RepositoryError
from outdial.outcomes import CallOutcome
from outdial.recipient import AttemptStatus, Recipient, RecipientStatus
from outdial.retry import RetryPolicy
from outdial.sql import SqlRepository, connect

Opener = Callable[[], SqlRepository]


def _placed_call(repo: SqlRepository) -> tuple[Campaign, Recipient, str]:
    """A stored active campaign with one calling recipient and its attempt in flight."""
    campaign = make_campaign(status=CampaignStatus.ACTIVE)
    recipient = make_recipient(campaign, phone(1), status=RecipientStatus.CALLING, attempts=1)
    attempt = make_attempt(recipient, status=AttemptStatus.PLACED, external_call_id="call-1")
    with repo.transaction() as uow:
        uow.add_campaign(campaign)
        uow.add_recipients([recipient])
        uow.add_attempt(attempt)
    return campaign, recipient, attempt.id


def _attempt_and_campaign(repo: SqlRepository, attempt_id: str) -> Campaign:
    with repo.transaction() as uow:
        attempt = uow.get_attempt(attempt_id)
        assert attempt is not None
        return uow.get_campaign(attempt.campaign_id)


def test_campaign_changed_by_another_process_is_read_fresh(open_repo: Opener) -> None:
    worker, web = open_repo(), open_repo()
    campaign, _, attempt_id = _placed_call(worker)
    assert _attempt_and_campaign(worker, attempt_id).concurrency_limit == 1  # now cached

    with web.transaction() as uow:
        stored = uow.get_campaign(campaign.id)
        uow.save_campaign(attrs.evolve(stored, concurrency_limit=7, name="Renamed"))

    seen = _attempt_and_campaign(worker, attempt_id)
    assert (seen.concurrency_limit, seen.name) == (7, "Renamed")
    assert seen.version == stored.version + 1


def test_rolled_back_campaign_change_never_reaches_the_cache(open_repo: Opener) -> None:
    worker, web = open_repo(), open_repo()
    campaign, _, attempt_id = _placed_call(worker)

    def rename_then_fail() -> None:
        with worker.transaction() as uow:
            stored = uow.get_campaign(campaign.id)
            uow.save_campaign(attrs.evolve(stored, name="Never committed"))
            # read back through a query that decodes the (uncommitted) row again
            assert [c.name for c, _ in uow.dispatchable_campaigns()] == ["Never committed"]
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        rename_then_fail()

    # another process commits a different change under the same version number
    with web.transaction() as uow:
        stored = uow.get_campaign(campaign.id)
        uow.save_campaign(attrs.evolve(stored, name="Committed"))

    assert _attempt_and_campaign(worker, attempt_id).name == "Committed"
    with worker.transaction() as uow:
        assert uow.get_campaign(campaign.id).name == "Committed"


def test_counters_read_with_the_attempt_include_this_transactions_moves(
    open_repo: Opener,
) -> None:
    repo = open_repo()
    campaign, recipient, attempt_id = _placed_call(repo)
    with repo.transaction() as uow:
        attempt = uow.get_attempt(attempt_id)
        assert attempt is not None
        before = uow.get_campaign(campaign.id).counters
        stored = uow.get_recipient(recipient.id)
        uow.save_recipient(
            attrs.evolve(stored, status=RecipientStatus.COMPLETED, outcome=CallOutcome.ANSWERED),
            stored,
        )
        after = uow.get_campaign(campaign.id).counters
    assert (before.calling, before.completed, before.answered) == (1, 0, 0)
    assert (after.calling, after.completed, after.answered) == (0, 1, 1)
    with repo.transaction() as uow:
        assert uow.get_campaign(campaign.id).counters == after


def test_history_read_with_the_attempt_follows_this_transactions_writes(
    open_repo: Opener,
) -> None:
    repo = open_repo()
    _, recipient, attempt_id = _placed_call(repo)
    with repo.transaction() as uow:
        attempt = uow.get_attempt(attempt_id)
        assert attempt is not None
        assert uow.attempts_for(recipient.id) == [attempt]
        ended = attrs.evolve(
            attempt, status=AttemptStatus.ENDED, outcome=CallOutcome.NO_ANSWER, ended_at=None
        )
        uow.save_attempt(ended)
        assert [a.status for a in uow.attempts_for(recipient.id)] == [AttemptStatus.ENDED]
        second = make_attempt(recipient, number=2, status=AttemptStatus.DIALING)
        uow.add_attempt(second)
        assert [a.id for a in uow.attempts_for(recipient.id)] == [attempt_id, second.id]

    with repo.transaction() as uow:  # two attempts: read from the table
        held = uow.get_attempt(second.id)
        assert held is not None
        assert [a.number for a in uow.attempts_for(recipient.id)] == [1, 2]


def test_history_shortcut_is_dropped_with_a_rolled_back_savepoint(open_repo: Opener) -> None:
    repo = open_repo()
    _, recipient, attempt_id = _placed_call(repo)

    def retry_then_fail() -> None:
        with repo.transaction() as inner:
            inner.add_attempt(make_attempt(recipient, number=2, status=AttemptStatus.DIALING))
            raise RepositoryError("undo the savepoint")

    with repo.transaction() as uow:
        assert uow.get_attempt(attempt_id) is not None
        with pytest.raises(RepositoryError):
            retry_then_fail()
        assert [a.id for a in uow.attempts_for(recipient.id)] == [attempt_id]


def test_refused_write_leaves_the_transaction_usable(open_repo: Opener) -> None:
    repo = open_repo()
    campaign, recipient, attempt_id = _placed_call(repo)
    with repo.transaction() as uow:
        stale = make_recipient(campaign, phone(2))
        with pytest.raises(RepositoryError):  # compare-and-set on a status it does not have
            uow.save_recipient(attrs.evolve(recipient, status=RecipientStatus.FAILED), stale)
        stored = uow.get_recipient(recipient.id)
        uow.save_recipient(attrs.evolve(stored, status=RecipientStatus.FAILED), stored)
    with repo.transaction() as uow:
        assert uow.get_recipient(recipient.id).status is RecipientStatus.FAILED
        assert uow.get_campaign(campaign.id).counters.failed == 1


def test_failed_block_rolls_back_what_went_straight_to_the_driver(open_repo: Opener) -> None:
    repo = open_repo()
    campaign, recipient, attempt_id = _placed_call(repo)

    def end_then_fail() -> None:
        with repo.transaction() as uow:
            attempt = uow.get_attempt(attempt_id)
            assert attempt is not None
            uow.save_attempt(attrs.evolve(attempt, status=AttemptStatus.ENDED))
            raise RuntimeError("handler failed")

    with pytest.raises(RuntimeError):
        end_then_fail()
    with repo.transaction() as uow:
        attempt = uow.get_attempt(attempt_id)
        assert attempt is not None and attempt.status is AttemptStatus.PLACED
        assert uow.get_campaign(campaign.id).counters.calling == 1


def test_campaign_settings_are_decoded_once_per_version(open_repo: Opener) -> None:
    repo = open_repo()
    campaign, _, attempt_id = _placed_call(repo)
    first = _attempt_and_campaign(repo, attempt_id)
    again = _attempt_and_campaign(repo, attempt_id)
    assert again.retry_policy is first.retry_policy  # the same decoded value, reused
    with repo.transaction() as uow:
        stored = uow.get_campaign(campaign.id)
        uow.save_campaign(attrs.evolve(stored, retry_policy=RetryPolicy(max_attempts=5)))
    changed = _attempt_and_campaign(repo, attempt_id)
    assert changed.retry_policy.max_attempts == 5


@pytest.mark.postgres
def test_pooled_connection_closed_by_the_server_is_replaced(pg_url: str) -> None:
    repo = connect(pg_url)
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        with repo.transaction() as uow:
            pid = uow._c().exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with admin.connect() as conn:
            assert conn.execute(sa.select(sa.func.pg_terminate_backend(pid))).scalar()
            deadline = time.monotonic() + 10
            while conn.execute(
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
            ).scalar():
                assert time.monotonic() < deadline, "the backend did not exit"
                time.sleep(0.01)
        with repo.transaction() as uow:  # no error: the pool replaced the dead connection
            assert uow._c().exec_driver_sql("SELECT pg_backend_pid()").scalar() != pid
    finally:
        admin.dispose()
        repo.close()


@pytest.mark.postgres
@pytest.mark.parametrize("by_call_id", [False, True], ids=["get_attempt", "find_attempt"])
def test_a_read_that_waited_for_the_attempt_lock_sees_the_recipient_as_committed(
    pg_url: str, by_call_id: bool
) -> None:
    """The attempt is read with its recipient in one row, locked. When that lock has to
    wait for a transaction that moved both (a placement recorded, a call ended), the row
    read after the wait carries both new versions: the recipient is not the one of the
    statement's snapshot (which a save would then refuse as a stale read)."""
    holder, waiter = connect(pg_url), connect(pg_url)
    try:
        campaign = make_campaign(status=CampaignStatus.ACTIVE)
        before, after = (
            (RecipientStatus.CALLING, RecipientStatus.COMPLETED)
            if by_call_id
            else (RecipientStatus.QUEUED, RecipientStatus.CALLING)
        )
        recipient = make_recipient(campaign, phone(1), status=before, attempts=1)
        attempt = make_attempt(recipient)
        if by_call_id:  # placed: a webhook finds it by its call id
            attempt = attrs.evolve(
                attempt, status=AttemptStatus.PLACED, provider="fake", external_call_id="call-1"
            )
        with holder.transaction() as uow:
            uow.add_campaign(campaign)
            uow.add_recipients([recipient])
            uow.add_attempt(attempt)
        locked, seen = threading.Event(), []

        def read_after_the_lock() -> None:
            locked.wait(5)
            with waiter.transaction() as uow:
                found = (
                    uow.find_attempt("fake", "call-1")
                    if by_call_id
                    else uow.get_attempt(attempt.id)
                )
                assert found is not None
                seen.append((found.status, uow.get_recipient(recipient.id).status))

        reader = threading.Thread(target=read_after_the_lock)
        reader.start()
        with holder.transaction() as uow:
            current = uow.get_attempt(attempt.id)
            assert current is not None
            stored = uow.get_recipient(recipient.id)
            moved = (
                attrs.evolve(current, status=AttemptStatus.ENDED, outcome=CallOutcome.ANSWERED)
                if by_call_id
                else attrs.evolve(
                    current, status=AttemptStatus.PLACED, provider="fake", external_call_id="c2"
                )
            )
            uow.save_attempt(moved)
            outcome = CallOutcome.ANSWERED if by_call_id else None
            uow.save_recipient(stored.moved_to(after, outcome=outcome), stored)
            locked.set()
            time.sleep(0.5)  # the reader's statement is now waiting for this lock
        reader.join(10)
        assert seen == [(moved.status, after)]
    finally:
        holder.close()
        waiter.close()

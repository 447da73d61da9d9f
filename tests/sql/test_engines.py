"""What each engine promises beyond the contract: locks, indexes, threads, heartbeats."""

from __future__ import annotations

import multiprocessing
import threading
import time
from datetime import timedelta

import attrs
import pytest
import sqlalchemy as sa

from contract.repository_contract import (
    T0,
    make_attempt,
    make_campaign,
    make_recipient,
    phone,
    seed,
)
from outdial.campaign import CampaignCounters, CampaignStatus
from outdial.dispatch import DialerCore
from outdial.engine import Effect
from outdial.errors import RepositoryError, StaleClaim
from outdial.outcomes import CallOutcome
from outdial.ports import CallEvent, CallStatus
from outdial.recipient import AttemptStatus, Recipient, RecipientStatus
from outdial.sql import Heartbeat, SqlRepository, connect

S = RecipientStatus


# -- both engines ---------------------------------------------------------------------------------


def test_sql_repositories_tell_async_runners_they_block(repo: SqlRepository) -> None:
    assert repo.blocking is True


def test_a_unit_of_work_is_closed_after_its_block(repo: SqlRepository) -> None:
    with repo.transaction() as uow:
        uow.add_campaign(make_campaign())
    with pytest.raises(RepositoryError, match="closed"):
        uow.dispatchable_campaigns()


def test_a_nested_transaction_is_a_savepoint(repo: SqlRepository) -> None:
    campaign = make_campaign()
    kept, dropped = make_recipient(campaign, phone(1)), make_recipient(campaign, phone(2))
    with repo.transaction() as outer:
        outer.add_campaign(campaign)
        outer.add_recipients([kept])
        seen: list[int] = []
        with pytest.raises(ZeroDivisionError):
            _add_then_fail(repo, dropped, seen)
        assert seen == [2]
        assert outer.get_campaign(campaign.id).counters == CampaignCounters(total=1, pending=1)
    with repo.transaction() as uow:
        assert uow.get_campaign(campaign.id).counters == CampaignCounters(total=1, pending=1)
        assert [r.id for r in uow.list_recipients(campaign.id).items] == [kept.id]


def _add_then_fail(repo: SqlRepository, recipient: Recipient, seen: list[int]) -> None:
    with repo.transaction() as inner:
        inner.add_recipients([recipient])
        seen.append(inner.get_campaign(recipient.campaign_id).counters.total)
        _ = 1 / 0


def test_threads_share_one_repository_and_the_counters_stay_exact(repo: SqlRepository) -> None:
    campaign = make_campaign(status=CampaignStatus.ACTIVE)
    stored = seed(repo, campaign, [make_recipient(campaign, phone(n)) for n in range(200)])
    errors: list[BaseException] = []

    def worker(part: list[str]) -> None:
        try:
            for rid in part:
                with repo.transaction() as uow:
                    current = uow.get_recipient(rid)
                    queued = current.moved_to(S.QUEUED, attempts=1)
                    uow.save_recipient(queued, current)
                    uow.add_attempt(make_attempt(queued))
                with repo.transaction() as uow:
                    current = uow.get_recipient(rid)
                    uow.save_recipient(
                        current.moved_to(S.COMPLETED, outcome=CallOutcome.ANSWERED), current
                    )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    ids = [r.id for r in stored]
    threads = [threading.Thread(target=worker, args=(ids[n::4],)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with repo.transaction() as uow:
        counters = uow.get_campaign(campaign.id).counters
        assert dict(uow.outcome_counts(campaign.id)) == {CallOutcome.ANSWERED: 200}
    assert counters == CampaignCounters(total=200, completed=200, answered=200, attempts=200)


def test_a_second_claim_of_the_same_call_is_refused_by_the_database(repo: SqlRepository) -> None:
    campaign = make_campaign()
    (recipient,) = seed(repo, campaign, [make_recipient(campaign, phone(1))])
    with repo.transaction() as uow:
        uow.add_attempt(make_attempt(recipient, number=1, worker_id="a"))
    with repo.transaction() as uow, pytest.raises(RepositoryError, match="in flight"):
        uow.add_attempt(make_attempt(recipient, number=1, worker_id="b"))
    with repo.transaction() as uow:
        assert [a.worker_id for a in uow.attempts_for(recipient.id)] == ["a"]


def test_a_reconciler_takes_over_with_a_newer_token_and_the_old_owner_is_fenced(
    repo: SqlRepository,
) -> None:
    campaign = make_campaign(status=CampaignStatus.ACTIVE)
    (recipient,) = seed(repo, campaign, [make_recipient(campaign, phone(1))])
    attempt = make_attempt(recipient, worker_id="dead", status=AttemptStatus.PLACED)
    with repo.transaction() as uow:
        uow.add_attempt(attempt)
    survivor = DialerCore(repo, worker_id="alive")
    ended = CallEvent("fake", CallStatus.ENDED, attempt_id=attempt.id, outcome=CallOutcome.BUSY)
    survivor.record_reconcile(T0 + timedelta(hours=3), attempt.id, ended)
    with repo.transaction() as uow:
        taken = uow.get_attempt(attempt.id)
        assert taken is not None
        assert (taken.worker_id, taken.claim_token, taken.status) == (
            "alive",
            1,
            AttemptStatus.ENDED,
        )
        late = attrs.evolve(attempt, outcome=CallOutcome.ANSWERED)  # the dead owner's write
        with pytest.raises(StaleClaim):
            uow.save_attempt(late)


def test_heartbeats_tell_live_workers_from_dead_ones(repo: SqlRepository) -> None:
    repo.heartbeat("a", T0)
    repo.heartbeat("b", T0)
    repo.heartbeat("b", T0 + timedelta(seconds=10))
    assert repo.dead_workers(T0 + timedelta(seconds=12), timedelta(seconds=5)) == ["a"]
    assert repo.dead_workers(T0 + timedelta(seconds=20), timedelta(seconds=5)) == ["a", "b"]
    assert repo.last_heartbeats() == {"a": T0, "b": T0 + timedelta(seconds=10)}
    repo.forget_worker("a")
    assert set(repo.last_heartbeats()) == {"b"}


def test_a_heartbeat_thread_beats_until_stopped(repo: SqlRepository) -> None:
    beat = Heartbeat(repo, "w", interval=timedelta(milliseconds=20))
    beat.start()
    deadline = time.monotonic() + 5
    while beat.beats < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    beat.stop()
    assert beat.beats >= 3 and beat.failures == 0
    assert "w" in repo.last_heartbeats()
    with pytest.raises(ValueError, match="positive"):
        Heartbeat(repo, "w", interval=timedelta(0))


def test_instants_are_stored_in_utc(url: str, repo: SqlRepository) -> None:
    campaign = make_campaign()
    seed(repo, campaign, [make_recipient(campaign, phone(1))])
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            stored = conn.exec_driver_sql("SELECT created_at FROM outdial_campaigns").scalar()
    finally:
        engine.dispose()
    text = str(stored)
    assert text.startswith("2026-03-02 14:00:00"), text  # T0 is 14:00 UTC


# -- SQLite -----------------------------------------------------------------------------------------


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(sqlite_url: str) -> None:
    with connect(sqlite_url + "?timeout=7") as repo, repo.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 7000
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL


def test_sqlite_in_memory_works_for_one_process() -> None:
    with connect("sqlite://", create=True) as repo:
        seed(repo, make_campaign(), [])
        with repo.transaction() as uow:
            assert len(uow.list_campaigns("ws-alpha").items) == 1


def _hold_write_lock(path: str, holding: multiprocessing.synchronize.Event, seconds: float) -> None:
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    holding.set()
    time.sleep(seconds)
    conn.execute("COMMIT")
    conn.close()


def test_a_second_sqlite_process_waits_for_the_write_lock_then_commits(sqlite_url: str) -> None:
    path = sa.make_url(sqlite_url).database
    assert path is not None
    context = multiprocessing.get_context("spawn")
    holding = context.Event()
    other = context.Process(target=_hold_write_lock, args=(path, holding, 0.5))
    other.start()
    try:
        assert holding.wait(30)
        started = time.monotonic()
        with connect(sqlite_url) as repo:
            seed(repo, make_campaign(), [])
        waited = time.monotonic() - started
    finally:
        other.join()
    assert waited >= 0.3  # it waited for the other process instead of failing


def test_a_sqlite_transaction_that_cannot_get_the_lock_in_time_fails_clearly(
    sqlite_url: str,
) -> None:
    path = sa.make_url(sqlite_url).database
    assert path is not None
    context = multiprocessing.get_context("spawn")
    holding = context.Event()
    other = context.Process(target=_hold_write_lock, args=(path, holding, 3.0))
    other.start()
    try:
        assert holding.wait(30)
        with (
            connect(sqlite_url + "?timeout=0.2") as repo,
            pytest.raises(RepositoryError, match="locked"),
        ):
            seed(repo, make_campaign(), [])
    finally:
        other.join()


# -- PostgreSQL -------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_dispatch_transactions_take_turns(pg_url: str) -> None:
    with connect(pg_url) as repo:
        inside = threading.Event()
        order: list[str] = []

        def first() -> None:
            with repo.transaction(dispatch_lock=True):
                inside.set()
                time.sleep(0.3)
                order.append("first done")

        thread = threading.Thread(target=first)
        thread.start()
        assert inside.wait(10)
        with repo.transaction(dispatch_lock=True):
            order.append("second inside")
        thread.join()
    assert order == ["first done", "second inside"]


@pytest.mark.postgres
def test_a_dispatch_passes_over_recipients_another_transaction_is_changing(pg_url: str) -> None:
    with connect(pg_url) as repo:
        campaign = make_campaign(status=CampaignStatus.ACTIVE)
        first, second = seed(repo, campaign, [make_recipient(campaign, phone(n)) for n in range(2)])
        locked = threading.Event()
        release = threading.Event()

        def editor() -> None:
            with repo.transaction() as uow:
                current = uow.get_recipient(first.id)
                uow.save_recipient(attrs.evolve(current, priority=1), current)  # row locked
                locked.set()
                release.wait(10)

        thread = threading.Thread(target=editor)
        thread.start()
        assert locked.wait(10)
        started = time.monotonic()
        with repo.transaction(dispatch_lock=True) as uow:
            due = uow.due_recipients(campaign.id, T0, 10)
        release.set()
        thread.join()
    assert [r.id for r in due] == [second.id]
    assert time.monotonic() - started < 5


@pytest.mark.postgres
def test_the_same_webhook_applied_twice_at_once_counts_once(pg_url: str) -> None:
    with connect(pg_url) as repo:
        campaign = make_campaign(status=CampaignStatus.ACTIVE)
        (recipient,) = seed(repo, campaign, [make_recipient(campaign, phone(1))])
        attempt = make_attempt(recipient, status=AttemptStatus.PLACED, external_call_id="call-1")
        with repo.transaction() as uow:
            uow.add_attempt(attempt)
            current = uow.get_recipient(recipient.id)
            queued = current.moved_to(S.QUEUED, attempts=1)
            uow.save_recipient(queued, current)
            uow.save_recipient(queued.moved_to(S.CALLING), queued)
        event = CallEvent(
            "fake", CallStatus.ENDED, external_call_id="call-1", outcome=CallOutcome.ANSWERED
        )
        effects: list[Effect | None] = []
        barrier = threading.Barrier(4)

        def handler() -> None:
            barrier.wait()
            effects.append(DialerCore(repo).apply_event(T0 + timedelta(minutes=1), event).effect)

        threads = [threading.Thread(target=handler) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with repo.transaction() as uow:
            counters = uow.get_campaign(campaign.id).counters
    assert effects.count(Effect.APPLIED) == 1
    assert counters.completed == 1 and counters.answered == 1 and counters.calling == 0


def _plan(conn: sa.Connection, sql: str, **params: object) -> str:
    rows = conn.execute(sa.text("EXPLAIN " + sql), params).scalars()
    return "\n".join(rows)


@pytest.mark.postgres
def test_the_due_queue_and_in_flight_reads_can_use_their_partial_indexes(pg_url: str) -> None:
    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            ready = _plan(
                conn,
                "SELECT id FROM outdial_recipients WHERE campaign_id = :c"
                " AND status = 'pending' AND next_attempt_at IS NULL"
                " ORDER BY priority DESC, seq LIMIT 10",
                c="x",
            )
            waiting = _plan(
                conn,
                "SELECT min(next_attempt_at) FROM outdial_recipients WHERE campaign_id = :c"
                " AND status = 'pending' AND next_attempt_at IS NOT NULL AND next_attempt_at > now()",
                c="x",
            )
            unfinished = _plan(
                conn, "SELECT id FROM outdial_attempts WHERE status <> 'ended' ORDER BY created_at"
            )
    finally:
        engine.dispose()
    assert "ix_outdial_recipients_ready" in ready
    assert "Sort" not in ready  # the index gives the dial order
    assert "ix_outdial_recipients_waiting" in waiting
    assert "ix_outdial_attempts_unfinished" in unfinished


@pytest.mark.postgres
def test_hot_tables_have_room_for_in_place_updates(pg_url: str) -> None:
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            options: dict[str, str] = dict(
                conn.exec_driver_sql(
                    "SELECT relname, array_to_string(reloptions, ',') FROM pg_class"
                    " WHERE relname LIKE 'outdial_%%' AND reloptions IS NOT NULL"
                ).all()
            )
            heartbeat_indexed = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_indexes WHERE tablename = 'outdial_workers'"
                " AND indexdef LIKE '%%heartbeat_at%%'"
            ).scalar()
    finally:
        engine.dispose()
    assert "fillfactor=85" in options["outdial_recipients"]
    assert "fillfactor=85" in options["outdial_attempts"]
    assert "fillfactor=50" in options["outdial_campaign_counters"]
    assert "autovacuum_vacuum_scale_factor=0.02" in options["outdial_attempts"]
    assert heartbeat_indexed == 0


@pytest.mark.postgres
def test_a_large_import_goes_through_copy_and_keeps_order(pg_url: str) -> None:
    with connect(pg_url) as repo:
        campaign = make_campaign()
        made = [make_recipient(campaign, phone(n), variables={"n": str(n)}) for n in range(2_500)]
        again = [make_recipient(campaign, phone(n)) for n in range(1_000, 1_500)]
        seed(repo, campaign)
        with repo.transaction() as uow:
            assert uow.add_recipients(made[:1_500]) == 1_500
            # the numbers 1,000-1,499 are there already: only the last 1,000 are new
            assert uow.add_recipients([*again, *made[1_500:]]) == 1_000
        with repo.transaction() as uow:
            page = uow.list_recipients(campaign.id, page=3, page_size=1_000)
            assert [r.id for r in page.items] == [r.id for r in made[2_000:]]
            assert page.items[0].variables == {"n": "2000"}
            assert uow.get_campaign(campaign.id).counters == CampaignCounters(
                total=2_500, pending=2_500
            )


def test_recipients_that_would_clash_leave_nothing_behind(repo: SqlRepository) -> None:
    campaign = make_campaign()
    (first,) = seed(repo, campaign, [make_recipient(campaign, phone(1))])
    with repo.transaction() as uow:
        with pytest.raises(RepositoryError, match="already exists"):
            uow.add_recipients(
                [make_recipient(campaign, phone(2)), attrs.evolve(first, phone=phone(3))]
            )
        assert uow.get_campaign(campaign.id).counters.total == 1
        assert uow.add_recipients([make_recipient(campaign, phone(4))]) == 1
    with repo.transaction() as uow:
        assert [r.phone for r in uow.list_recipients(campaign.id).items] == [phone(1), phone(4)]

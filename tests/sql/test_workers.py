"""Several worker processes share one campaign; one of them may be killed.

The attempts table is the proof. ``recorded_at`` / ``closed_at`` are stamped by
the database clock in commit order, so the intervals ``[recorded_at,
closed_at)`` are exactly the attempts in flight as the dispatchers saw them:

- no recipient ever had two attempts in flight (invariant 1);
- the attempts in flight never exceeded the concurrency limit (invariant 2);
- every recipient ended in a final state, the counters equal a recount
  (invariant 8), and the workers really shared the work.

In the crash test a worker is killed with SIGKILL mid-campaign; the others
finish, and the attempts it left in flight are reconciled (taken over with a
newer fencing token and ended from what the provider's ledger says), never
redialled blindly.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from invariants import all_recipients, max_overlap
from outdial import AgentSettings, CampaignService, CampaignStatus, RetryPolicy
from outdial.ports import SystemClock
from outdial.recipient import RecipientStatus
from outdial.retry import Fixed
from outdial.simulation import sample_numbers
from outdial.sql import SqlRepository, connect
from sql.workers import Ledger, WorkerSpec, run_worker

pytestmark = pytest.mark.slow

CONCURRENCY = 8


def _size(default: int) -> int:
    """Recipients per test: ``$OUTDIAL_TEST_SHARED_RECIPIENTS`` overrides the default.

    The issue's figure is 20,000 (``OUTDIAL_TEST_SHARED_RECIPIENTS=20000``). The
    default is smaller so that the PostgreSQL run stays within two to three
    minutes on a busy two-core machine: calls last milliseconds here, so every
    call is a dispatch round of its own, serialised by the dispatch lock.
    """
    return int(os.environ.get("OUTDIAL_TEST_SHARED_RECIPIENTS", str(default)))


PG_RECIPIENTS = _size(5_000)  # the shared-campaign test; CI runs it at 20,000
PG_CRASH_RECIPIENTS = 2_000
SQLITE_RECIPIENTS = 2_000
SQLITE_CRASH_RECIPIENTS = 1_000
#: seconds the workers may take (they stop then, and the test fails)
BUDGET = float(os.environ.get("OUTDIAL_TEST_SHARED_BUDGET", "600"))


def _campaign(repo: SqlRepository, recipients: int) -> str:
    service = CampaignService(repo, clock=SystemClock())
    campaign = service.create(
        "w1",
        name="Shared",
        agent=AgentSettings(provider="simulated"),
        concurrency_limit=CONCURRENCY,
        max_recipients=recipients,
        retry_policy=RetryPolicy(max_attempts=2, backoff=Fixed(timedelta(milliseconds=50))),
        recipients=[{"phone_number": p} for p in sample_numbers(recipients, seed=11)],
    )
    service.start("w1", campaign.id)
    return campaign.id


def _start(
    url: str, ledger: Path, campaign_id: str, workers: int, budget: float, **timeouts: float
) -> list[multiprocessing.process.BaseProcess]:
    context = multiprocessing.get_context("spawn")
    deadline = time.time() + budget
    processes: list[multiprocessing.process.BaseProcess] = []
    for n in range(workers):
        spec = WorkerSpec(
            url=url,
            ledger=str(ledger),
            worker_id=f"worker-{n}",
            campaign_id=campaign_id,
            seed=n,
            deadline=deadline,
            **timeouts,
        )
        process = context.Process(target=run_worker, args=(spec,), name=spec.worker_id)
        process.start()
        processes.append(process)
    return processes


def _join(processes: Sequence[multiprocessing.process.BaseProcess], budget: float) -> None:
    deadline = time.time() + budget
    for process in processes:
        process.join(max(0.1, deadline - time.time()))
    alive = [p.name for p in processes if p.is_alive()]
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()
    assert not alive, f"workers still running after {budget:.0f} s: {alive}"
    failed = {p.name: p.exitcode for p in processes if p.exitcode != 0}
    assert not failed, f"workers failed: {failed}"


def _attempt_rows(url: str, campaign_id: str) -> list[sa.Row[tuple[object, ...]]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(
                    sa.text(
                        "SELECT id, recipient_id, status, worker_id, claim_token,"
                        " recorded_at, closed_at, error FROM outdial_attempts"
                        " WHERE campaign_id = :cid AND NOT test_call"
                    ),
                    {"cid": campaign_id},
                )
            )
    finally:
        engine.dispose()


def _instant(value: object) -> datetime:
    """A stamp as the driver returns it (SQLite: text), comparable with the others."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=None) if value.tzinfo is None else value
    return datetime.fromisoformat(str(value))


def _check_shared_campaign(
    repo: SqlRepository, url: str, campaign_id: str, workers: int
) -> list[sa.Row[tuple[object, ...]]]:
    """Invariants 1, 2 and 8 from what the database holds; returns the attempt rows."""
    rows = _attempt_rows(url, campaign_id)
    assert rows
    left = [row for row in rows if row.closed_at is not None] and [
        row for row in rows if row.closed_at is None
    ]
    assert not left, f"attempts left in flight: {left}"
    spans = [(_instant(row.recorded_at), _instant(row.closed_at)) for row in rows]
    horizon = max(end for _, end in spans)
    # 2. in-flight calls never exceeded the concurrency limit, at any instant
    assert max_overlap(spans, horizon) <= CONCURRENCY
    # 1. no recipient ever had two attempts in flight
    by_recipient: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
    for row, span in zip(rows, spans, strict=True):
        by_recipient[str(row.recipient_id)].append(span)
    assert max(max_overlap(s, horizon) for s in by_recipient.values()) == 1

    recipients = all_recipients(repo, campaign_id)
    with repo.transaction() as uow:
        campaign = uow.get_campaign(campaign_id)
    assert campaign.status is CampaignStatus.COMPLETED
    # every recipient ended in a final state (or, were it still running, a due retry)
    assert all(
        r.status.final or (r.status is RecipientStatus.PENDING and r.next_attempt_at)
        for r in recipients
    )
    # 8. the counters equal the recipients' states; attempts counted once each
    counts = Counter(r.status for r in recipients)
    for status in RecipientStatus:
        assert getattr(campaign.counters, status.value) == counts.get(status, 0)
    assert campaign.counters.attempts == len(rows)
    assert sum(r.attempts for r in recipients) <= len(rows)
    # the workers really shared the campaign
    if repo.postgres:  # SQLite: a second process may simply wait its turn
        assert len({row.worker_id for row in rows}) >= min(workers, 3)
    return rows


def _shared_campaign(url: str, tmp_path: Path, recipients: int, workers: int) -> None:
    repo = connect(url)
    try:
        campaign_id = _campaign(repo, recipients)
        ledger = tmp_path / "ledger.db"
        Ledger.create(str(ledger)).close()
        started = time.monotonic()
        _join(_start(url, ledger, campaign_id, workers, budget=BUDGET), budget=BUDGET + 30)
        elapsed = time.monotonic() - started
        rows = _check_shared_campaign(repo, url, campaign_id, workers)
        print(
            f"{workers} workers, {recipients} recipients, {len(rows)} attempts in {elapsed:.1f} s"
        )
        # The provider's side: every call it accepted is an attempt, none twice.
        ledger_calls = Ledger(str(ledger)).calls()
        assert {a for a, *_ in ledger_calls} <= {str(row.id) for row in rows}
    finally:
        repo.close()


@pytest.mark.postgres
def test_four_postgres_workers_share_a_campaign_within_the_caps(
    pg_url: str, tmp_path: Path
) -> None:
    _shared_campaign(pg_url, tmp_path, PG_RECIPIENTS, workers=4)


def test_two_processes_on_one_sqlite_file_neither_corrupt_nor_double_dial(
    sqlite_url: str, tmp_path: Path
) -> None:
    _shared_campaign(sqlite_url, tmp_path, SQLITE_RECIPIENTS, workers=2)


def _unfinished_by_worker(url: str, campaign_id: str) -> tuple[int, dict[str, list[str]]]:
    """(attempts ended so far, worker -> ids of its attempts in flight)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            ended = conn.execute(
                sa.text(
                    "SELECT count(*) FROM outdial_attempts WHERE campaign_id = :cid"
                    " AND status = 'ended'"
                ),
                {"cid": campaign_id},
            ).scalar_one()
            rows = conn.execute(
                sa.text(
                    "SELECT worker_id, id FROM outdial_attempts WHERE status <> 'ended'"
                    " AND campaign_id = :cid"
                ),
                {"cid": campaign_id},
            ).all()
    finally:
        engine.dispose()
    found: dict[str, list[str]] = defaultdict(list)
    for worker, attempt_id in rows:
        found[str(worker)].append(str(attempt_id))
    return int(ended), found


def _kill_one_mid_call(
    url: str,
    campaign_id: str,
    processes: Sequence[multiprocessing.process.BaseProcess],
    after: int,
) -> tuple[multiprocessing.process.BaseProcess, list[str]]:
    """Once ``after`` attempts have ended, SIGKILL a worker that has calls in flight.

    The worker is frozen (SIGSTOP) before its attempts are read, so what it had in
    flight cannot change between the look and the kill; a worker found with
    nothing in flight is let go (SIGCONT) and another chance is taken.
    """
    by_name = {p.name: p for p in processes}
    deadline = time.time() + 120
    while time.time() < deadline:
        ended, busy = _unfinished_by_worker(url, campaign_id)
        candidates = [w for w in busy if w in by_name] if ended >= after else []
        if not candidates:
            time.sleep(0.01)
            continue
        victim = by_name[max(candidates, key=lambda w: len(busy[w]))]
        os.kill(victim.pid or 0, signal.SIGSTOP)
        _, frozen = _unfinished_by_worker(url, campaign_id)
        if frozen.get(victim.name):
            os.kill(victim.pid or 0, signal.SIGKILL)
            victim.join()
            return victim, frozen[victim.name]
        os.kill(victim.pid or 0, signal.SIGCONT)
    raise AssertionError("no worker was ever caught with calls in flight")


def _crash(url: str, tmp_path: Path, recipients: int) -> None:
    repo = connect(url)
    try:
        campaign_id = _campaign(repo, recipients)
        ledger = tmp_path / "ledger.db"
        Ledger.create(str(ledger)).close()
        processes = _start(url, ledger, campaign_id, 4, budget=BUDGET, dial_confirm_timeout=0.5)
        victim, in_flight = _kill_one_mid_call(url, campaign_id, processes, recipients // 5)
        assert victim.exitcode == -signal.SIGKILL
        survivors = [p for p in processes if p is not victim]
        _join(survivors, budget=BUDGET + 30)

        rows = _check_shared_campaign(repo, url, campaign_id, 4)
        by_id = {str(row.id): row for row in rows}
        for attempt_id in in_flight:
            row = by_id[attempt_id]
            # reconciled by a survivor: taken over with a newer fencing token, then ended
            assert row.worker_id != victim.name and int(row.claim_token) >= 1
            assert row.closed_at is not None
        assert victim.name in repo.dead_workers(SystemClock().now(), timedelta(seconds=1))
        assert set(repo.last_heartbeats()) == {victim.name}  # the others left cleanly
        # Every call the provider accepted belongs to a recorded attempt (claims are
        # committed before dialling), and no recipient had two attempts in flight.
        ledger_calls = Ledger(str(ledger)).calls()
        assert {a for a, *_ in ledger_calls} <= set(by_id)
    finally:
        repo.close()


@pytest.mark.postgres
def test_a_killed_postgres_worker_is_reconciled_and_the_others_finish(
    pg_url: str, tmp_path: Path
) -> None:
    _crash(pg_url, tmp_path, PG_CRASH_RECIPIENTS)


def test_a_killed_sqlite_process_is_reconciled_and_the_others_finish(
    sqlite_url: str, tmp_path: Path
) -> None:
    _crash(sqlite_url, tmp_path, SQLITE_CRASH_RECIPIENTS)

"""A campaign's counters are the sum of its shards, and shards keep workers apart.

On PostgreSQL every transaction adds its counter moves to one of
``COUNTER_SHARDS`` rows of the campaign (``(campaign_id, shard)``), so the
workers' transactions do not take turns on one row lock held until each commit
is on disk. Every read adds the shards up. These tests pin that the sum is what
the recipients and attempts say whatever shards the moves landed in, that two
transactions of one campaign in different shards commit without waiting for each
other, and that the migration keeps the counters both ways.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

import attrs
import pytest
import sqlalchemy as sa
from alembic import command

from contract.repository_contract import make_attempt, make_campaign, make_recipient, phone
from outdial.campaign import Campaign, CampaignCounters, CampaignStatus
from outdial.outcomes import CallOutcome
from outdial.recipient import AttemptStatus, RecipientStatus
from outdial.sql import SqlRepository, connect, current_revision, head_revision, upgrade
from outdial.sql.repository import COUNTER_SHARDS

Opener = Callable[[], SqlRepository]
OUTCOMES = (CallOutcome.ANSWERED, CallOutcome.BUSY, CallOutcome.NO_ANSWER, CallOutcome.ANSWERED)


def _shards(repo: SqlRepository, *shards: int) -> None:
    """Make ``repo``'s transactions take ``shards`` in turn."""
    turns = itertools.cycle(shards)
    repo._counter_shard = lambda: next(turns)  # type: ignore[method-assign]


def _stored_shards(url: str, campaign_id: str) -> list[int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT shard FROM outdial_campaign_counters WHERE campaign_id = "
                + ("%(id)s" if engine.dialect.name == "postgresql" else ":id")
                + " ORDER BY shard",
                {"id": campaign_id},
            )
            return [shard for (shard,) in rows]
    finally:
        engine.dispose()


def _calls_ended(repo: SqlRepository, n: int) -> tuple[Campaign, list[str]]:
    """A campaign with ``n`` calling recipients, then each call ended and its recipient
    completed in a transaction of its own (outcomes from ``OUTCOMES``)."""
    campaign = make_campaign(status=CampaignStatus.ACTIVE)
    recipients = [
        make_recipient(campaign, phone(i), status=RecipientStatus.CALLING, attempts=1)
        for i in range(n)
    ]
    attempts = [make_attempt(r, status=AttemptStatus.PLACED) for r in recipients]
    with repo.transaction() as uow:
        uow.add_campaign(campaign)
        uow.add_recipients(recipients)
        for attempt in attempts:
            uow.add_attempt(attempt)
    for i, attempt in enumerate(attempts):
        outcome = OUTCOMES[i % len(OUTCOMES)]
        with repo.transaction() as uow:
            held = uow.get_attempt(attempt.id)
            assert held is not None
            uow.save_attempt(
                attrs.evolve(
                    held,
                    status=AttemptStatus.ENDED,
                    outcome=outcome,
                    duration_seconds=10.0 * (i + 1),
                )
            )
            stored = uow.get_recipient(held.recipient_id)
            uow.save_recipient(
                attrs.evolve(stored, status=RecipientStatus.COMPLETED, outcome=outcome), stored
            )
    return campaign, [a.id for a in attempts]


def test_counters_moved_in_many_shards_add_up_to_the_recipients(
    open_repo: Opener, url: str
) -> None:
    repo = open_repo()
    _shards(repo, 0, 7, 3, 15, 7)
    campaign, attempt_ids = _calls_ended(repo, 6)
    expected = CampaignCounters(total=6, completed=6, answered=3, attempts=6)
    with open_repo().transaction() as uow:  # another process reads every way there is
        attempt = uow.get_attempt(attempt_ids[0])  # counters read with the attempt
        assert attempt is not None
        assert uow.get_campaign(campaign.id).counters == expected
    with open_repo().transaction() as uow:
        assert uow.get_campaign(campaign.id).counters == expected
        assert [counters for _, counters in uow.dispatchable_campaigns()] == [expected]
        assert [c.counters for c in uow.list_campaigns(campaign.workspace_id).items] == [expected]
        assert uow.list_recipients(campaign.id).total == 6
        assert uow.list_recipients(campaign.id, statuses=[RecipientStatus.CALLING]).total == 0
        assert dict(uow.outcome_counts(campaign.id)) == {
            CallOutcome.ANSWERED: 3,
            CallOutcome.BUSY: 2,
            CallOutcome.NO_ANSWER: 1,
        }
        assert uow.duration_totals(campaign.id) == (3, 10.0 + 40.0 + 50.0)
    shards = _stored_shards(url, campaign.id)
    if repo.postgres:
        assert shards == [0, 3, 7, 15]  # the campaign's own row and three more
    else:
        assert shards == [0]  # one writer at a time: one row


def test_a_campaign_saved_after_moves_in_other_shards_keeps_their_sum(
    open_repo: Opener,
) -> None:
    repo = open_repo()
    _shards(repo, 5, 9)
    campaign, _ = _calls_ended(repo, 2)
    with repo.transaction() as uow:
        stored = uow.get_campaign(campaign.id)
        saved = uow.save_campaign(attrs.evolve(stored, name="Renamed"))
    assert (
        saved.counters
        == stored.counters
        == CampaignCounters(total=2, completed=2, answered=1, attempts=2)
    )
    with open_repo().transaction() as uow:
        assert uow.get_campaign(campaign.id) == saved


@pytest.mark.postgres
def test_two_transactions_of_one_campaign_in_different_shards_do_not_wait(pg_url: str) -> None:
    first, second = connect(pg_url), connect(pg_url)
    try:
        _shards(first, 2)
        _shards(second, 11)
        campaign = make_campaign(status=CampaignStatus.ACTIVE)
        recipients = [make_recipient(campaign, phone(i)) for i in range(2)]
        with first.transaction() as uow:
            uow.add_campaign(campaign)
            uow.add_recipients(recipients)
        holding, release = threading.Event(), threading.Event()
        errors: list[BaseException] = []

        def hold_a_shard_row() -> None:
            try:
                with first.transaction() as uow:
                    stored = uow.get_recipient(recipients[0].id)
                    uow.save_recipient(attrs.evolve(stored, status=RecipientStatus.SKIPPED), stored)
                    with first.transaction():  # a savepoint writes the moves: row locked
                        pass
                    holding.set()
                    assert release.wait(30)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
                holding.set()

        holder = threading.Thread(target=hold_a_shard_row)
        holder.start()
        try:
            assert holding.wait(30)
            done = threading.Event()

            def move_the_same_campaign() -> None:
                with second.transaction() as uow:
                    stored = uow.get_recipient(recipients[1].id)
                    uow.save_recipient(attrs.evolve(stored, status=RecipientStatus.SKIPPED), stored)
                done.set()

            mover = threading.Thread(target=move_the_same_campaign)
            mover.start()
            committed = done.wait(10)  # in one row it would wait for the holder's commit
        finally:
            release.set()
            holder.join(30)
        mover.join(30)
        assert not errors
        assert committed, "the second transaction waited for the first one's counters row"
        with second.transaction() as uow:
            counters = uow.get_campaign(campaign.id).counters
        assert (counters.total, counters.pending, counters.skipped) == (2, 0, 2)
    finally:
        first.close()
        second.close()


def test_the_shard_of_a_transaction_spreads_over_every_shard(open_repo: Opener) -> None:
    repo = open_repo()
    seen = {repo._counter_shard() for _ in range(50 * COUNTER_SHARDS)}
    assert seen == set(range(COUNTER_SHARDS))


def _alembic(url: str, revision: str, down: bool) -> None:
    from outdial.sql import _alembic_config

    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn, _alembic_config() as config:
            config.attributes["connection"] = conn
            (command.downgrade if down else command.upgrade)(config, revision)
    finally:
        engine.dispose()


def test_downgrading_adds_the_shards_up_and_upgrading_again_keeps_them(
    open_repo: Opener, url: str
) -> None:
    repo = open_repo()
    _shards(repo, 4, 8, 4)
    campaign, _ = _calls_ended(repo, 4)
    expected = CampaignCounters(total=4, completed=4, answered=2, attempts=4)
    repo.close()
    _alembic(url, "0002", down=True)
    assert current_revision(url) == "0002"
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT total, completed, answered, attempts, answered_calls, answered_seconds,"
                " outcome_answered, outcome_busy FROM outdial_campaign_counters"
            ).all()
    finally:
        engine.dispose()
    assert [tuple(row) for row in rows] == [(4, 4, 2, 4, 2, 10.0 + 40.0, 2, 1)]
    upgrade(url)
    assert current_revision(url) == head_revision()
    assert _stored_shards(url, campaign.id) == [0]
    with open_repo().transaction() as uow:
        assert uow.get_campaign(campaign.id).counters == expected

"""Batched claims (``add_claims``) on SQLite and PostgreSQL: the database guards
refuse a batch exactly as they refuse the one-by-one calls."""

from __future__ import annotations

import pytest

from contract.repository_contract import make_attempt, make_campaign, make_recipient, phone
from outdial.campaign import CampaignCounters, CampaignStatus
from outdial.errors import RepositoryError
from outdial.recipient import RecipientStatus
from outdial.sql import SqlRepository, connect, repository


def test_second_attempt_in_flight_refuses_the_batch_like_add_attempt(repo: SqlRepository) -> None:
    campaign = make_campaign(status=CampaignStatus.ACTIVE)
    with repo.transaction() as uow:
        uow.add_campaign(campaign)
        uow.add_recipients([make_recipient(campaign, phone(n)) for n in range(3)])
    with repo.transaction() as uow:
        first, second, third = uow.list_recipients(campaign.id).items
        uow.add_attempt(make_attempt(second))  # in flight already: number 1
    claims = [
        (make_attempt(r), r.moved_to(RecipientStatus.QUEUED, attempts=1), r)
        for r in (first, second, third)
    ]
    with repo.transaction() as uow, pytest.raises(RepositoryError) as single:
        uow.add_attempt(claims[1][0])
    with pytest.raises(RepositoryError) as batched, repo.transaction() as uow:
        uow.add_claims(claims)
    assert "in flight" in str(batched.value)
    assert str(batched.value) == str(single.value)
    with repo.transaction() as uow:
        assert uow.get_campaign(campaign.id).counters == CampaignCounters(
            total=3, pending=3, attempts=1
        )
        assert [len(uow.attempts_for(r.id)) for r in (first, second, third)] == [0, 1, 0]


def test_consecutive_batched_rounds_claim_each_recipient_once(repo: SqlRepository) -> None:
    campaign = make_campaign(status=CampaignStatus.ACTIVE)
    with repo.transaction() as uow:
        uow.add_campaign(campaign)
        uow.add_recipients([make_recipient(campaign, phone(n)) for n in range(6)])
    for _ in range(2):
        with repo.transaction(dispatch_lock=True) as uow:
            due = uow.due_recipients(campaign.id, campaign.created_at, 3)
            uow.add_claims(
                [(make_attempt(r), r.moved_to(RecipientStatus.QUEUED, attempts=1), r) for r in due]
            )
    with repo.transaction() as uow:
        assert uow.get_campaign(campaign.id).counters == CampaignCounters(
            total=6, queued=6, attempts=6
        )
        assert uow.in_flight().by_campaign[campaign.id] == 6
        recipients = uow.list_recipients(campaign.id).items
        assert [len(uow.attempts_for(r.id)) for r in recipients] == [1] * 6


def test_an_old_sqlite_takes_the_claims_one_by_one(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(repository, "_SQLITE_BATCHES", False)
    repo = connect(sqlite_url)
    try:
        test_consecutive_batched_rounds_claim_each_recipient_once(repo)
        test_second_attempt_in_flight_refuses_the_batch_like_add_attempt(repo)
    finally:
        repo.close()

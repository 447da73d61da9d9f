"""What the in-memory repository keeps exact when a call's result is written: the order of
a recipient's attempts across updates, and the outcome counts after a rollback."""

from __future__ import annotations

from datetime import timedelta

import attrs
import pytest

from contract.repository_contract import make_attempt, make_campaign, make_recipient, phone
from outdial.campaign import CampaignCounters
from outdial.outcomes import CallOutcome
from outdial.recipient import AttemptStatus, Recipient, RecipientStatus
from outdial.testing import InMemoryRepository


class Boom(Exception):
    pass


def _settle(recipient: Recipient, status: RecipientStatus, outcome: CallOutcome) -> Recipient:
    return recipient.moved_to(RecipientStatus.QUEUED).moved_to(status, outcome=outcome)


def _outcomes(repo: InMemoryRepository, campaign_id: str) -> list[tuple[CallOutcome, int]]:
    with repo.transaction() as uow:
        return list(uow.outcome_counts(campaign_id).items())  # in order: keys as they came


def _counters(repo: InMemoryRepository, campaign_id: str) -> CampaignCounters:
    with repo.transaction() as uow:
        return uow.get_campaign(campaign_id).counters


@pytest.mark.parametrize("savepoint", [False, True])
def test_rolled_back_outcome_moves_leave_the_counts_and_their_order_as_they_were(
    savepoint: bool,
) -> None:
    repo = InMemoryRepository()
    campaign = make_campaign()
    with repo.transaction() as uow:
        uow.add_campaign(campaign)
        uow.add_recipients([make_recipient(campaign, phone(i)) for i in range(6)])
        rs = uow.list_recipients(campaign.id).items
        # two outcomes counted already: busy first, then answered
        uow.save_recipient(_settle(rs[0], RecipientStatus.FAILED, CallOutcome.BUSY), rs[0])
        uow.save_recipient(_settle(rs[1], RecipientStatus.COMPLETED, CallOutcome.ANSWERED), rs[1])
    before = _outcomes(repo, campaign.id)
    assert before == [(CallOutcome.BUSY, 1), (CallOutcome.ANSWERED, 1)]
    counters = _counters(repo, campaign.id)
    assert (counters.answered, counters.completed, counters.failed) == (1, 1, 1)

    def moves() -> None:
        with repo.transaction() as uow:
            # an outcome never seen, one already counted, and one moved to another outcome
            uow.save_recipient(_settle(rs[2], RecipientStatus.FAILED, CallOutcome.NO_ANSWER), rs[2])
            uow.save_recipient(_settle(rs[3], RecipientStatus.FAILED, CallOutcome.BUSY), rs[3])
            stored = uow.get_recipient(rs[1].id)
            # (a final recipient put back: what a service's requeue writes)
            uow.save_recipient(attrs.evolve(stored, status=RecipientStatus.PENDING), stored)
            assert dict(uow.outcome_counts(campaign.id)) == {
                CallOutcome.BUSY: 2,
                CallOutcome.NO_ANSWER: 1,
            }
            assert uow.get_campaign(campaign.id).counters.answered == 0
            raise Boom

    if savepoint:
        with repo.transaction() as uow, pytest.raises(Boom):
            moves()
    else:
        with pytest.raises(Boom):
            moves()
    assert _outcomes(repo, campaign.id) == before
    assert _counters(repo, campaign.id) == counters
    # keys added later come in the order they are added, as if nothing had happened
    with repo.transaction() as uow:
        uow.save_recipient(_settle(rs[4], RecipientStatus.FAILED, CallOutcome.DECLINED), rs[4])
        uow.save_recipient(_settle(rs[5], RecipientStatus.FAILED, CallOutcome.NO_ANSWER), rs[5])
    assert _outcomes(repo, campaign.id) == [
        *before,
        (CallOutcome.DECLINED, 1),
        (CallOutcome.NO_ANSWER, 1),
    ]


def test_a_late_update_of_an_older_attempt_keeps_the_attempts_in_order() -> None:
    repo = InMemoryRepository()
    campaign = make_campaign()
    with repo.transaction() as uow:
        uow.add_campaign(campaign)
        uow.add_recipients([make_recipient(campaign, phone(1))])
        (r,) = uow.list_recipients(campaign.id).items
        first = make_attempt(r, 1, id="a-1")
        second = make_attempt(r, 2, id="a-2", created_at=first.created_at + timedelta(hours=1))
        uow.add_attempt(first)
        uow.add_attempt(second)
    ended = attrs.evolve(
        first, status=AttemptStatus.ENDED, outcome=CallOutcome.BUSY, ended_at=second.created_at
    )

    def late_event_rolled_back() -> None:
        with repo.transaction() as uow:
            uow.save_attempt(ended)  # a late event for the first call
            assert [a.id for a in uow.attempts_for(r.id)] == ["a-1", "a-2"]
            assert uow.attempts_for(r.id)[0] == ended
            raise Boom

    with pytest.raises(Boom):
        late_event_rolled_back()
    with repo.transaction() as uow:
        assert uow.attempts_for(r.id) == [first, second]
        uow.save_attempt(ended)
    with repo.transaction() as uow:
        assert uow.attempts_for(r.id) == [ended, second]
        assert uow.attempt_starts([r.id], first.created_at) == {
            r.id: [first.created_at, second.created_at]
        }

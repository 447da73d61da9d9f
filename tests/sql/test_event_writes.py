"""An applied call result's writes: the attempt and its recipient in one statement.

On PostgreSQL, an attempt write that no constraint can refuse (the call ended, or
only times, outcome, error, sequence or the claim changed) is held back and sent
in one statement with the recipient write that follows it (``WITH a AS (UPDATE
attempt) UPDATE recipient ...``), or on its own before any other statement. These
tests pin that nothing about it shows: the same errors at the same calls, the
same rows, reads in the transaction that see the write, savepoints that undo it;
and that a transaction in which a statement failed is never taken for committed.
"""

from __future__ import annotations

import contextlib

import attrs
import pytest

from contract.repository_contract import T0, make_attempt, make_campaign, make_recipient, phone
from outdial.campaign import Campaign, CampaignStatus
from outdial.errors import RepositoryError, StaleClaim
from outdial.outcomes import CallOutcome
from outdial.recipient import Attempt, AttemptStatus, Recipient, RecipientStatus
from outdial.sql import SqlRepository, connect


def _calls(repo: SqlRepository, n: int = 1) -> tuple[Campaign, list[Recipient], list[Attempt]]:
    campaign = make_campaign(status=CampaignStatus.ACTIVE)
    recipients = [
        make_recipient(campaign, phone(i), status=RecipientStatus.CALLING, attempts=1)
        for i in range(n)
    ]
    attempts = [
        make_attempt(r, status=AttemptStatus.PLACED, external_call_id=f"call-{i}")
        for i, r in enumerate(recipients)
    ]
    with repo.transaction() as uow:
        uow.add_campaign(campaign)
        uow.add_recipients(recipients)
        for attempt in attempts:
            uow.add_attempt(attempt)
        recipients = [uow.get_recipient(r.id) for r in recipients]  # as stored (seq)
    return campaign, recipients, attempts


def _ended(attempt: Attempt) -> Attempt:
    return attrs.evolve(
        attempt,
        status=AttemptStatus.ENDED,
        outcome=CallOutcome.ANSWERED,
        ended_at=T0,
        duration_seconds=12.0,
    )


def _completed(recipient: Recipient) -> Recipient:
    return attrs.evolve(recipient, status=RecipientStatus.COMPLETED, outcome=CallOutcome.ANSWERED)


def test_an_ended_call_and_its_completed_recipient_are_both_stored(repo: SqlRepository) -> None:
    campaign, (recipient,), (attempt,) = _calls(repo)
    with repo.transaction() as uow:
        held = uow.get_attempt(attempt.id)
        assert held is not None
        uow.save_attempt(_ended(held))
        stored = uow.get_recipient(recipient.id)
        uow.save_recipient(_completed(stored), stored)
    with repo.transaction() as uow:
        assert uow.get_attempt(attempt.id) == _ended(attempt)
        assert uow.get_recipient(recipient.id) == _completed(recipient)
        counters = uow.get_campaign(campaign.id).counters
        assert (counters.calling, counters.completed, counters.answered) == (0, 1, 1)
        assert uow.duration_totals(campaign.id) == (1, 12.0)
        assert uow.in_flight().total == 0


def test_a_refused_recipient_write_keeps_the_attempt_write_before_it(repo: SqlRepository) -> None:
    _, (recipient,), (attempt,) = _calls(repo)
    with repo.transaction() as uow:
        held = uow.get_attempt(attempt.id)
        assert held is not None
        uow.save_attempt(_ended(held))
        stale = attrs.evolve(recipient, status=RecipientStatus.QUEUED)  # not what is stored
        with pytest.raises(RepositoryError, match="is calling, not queued"):
            uow.save_recipient(_completed(stale), stale)
        # the transaction goes on, as after a refused compare-and-set alone
        assert uow.get_recipient(recipient.id).status is RecipientStatus.CALLING
    with repo.transaction() as uow:
        assert uow.get_attempt(attempt.id) == _ended(attempt)
        assert uow.get_recipient(recipient.id).status is RecipientStatus.CALLING


def test_reads_after_an_attempt_write_in_the_transaction_see_it(repo: SqlRepository) -> None:
    campaign, (recipient,), (attempt,) = _calls(repo)
    with repo.transaction() as uow:
        held = uow.get_attempt(attempt.id)
        assert held is not None
        uow.save_attempt(_ended(held))  # no recipient write follows
        assert uow.in_flight().total == 0
        assert uow.attempts_for(recipient.id) == [_ended(attempt)]
        assert uow.find_attempt("fake", "call-0") == _ended(attempt)
        assert uow.duration_totals(campaign.id) == (1, 12.0)
    with repo.transaction() as uow:
        assert uow.get_attempt(attempt.id) == _ended(attempt)


def test_an_attempt_write_alone_is_committed(repo: SqlRepository) -> None:
    _, _, (attempt,) = _calls(repo)
    with repo.transaction() as uow:
        held = uow.get_attempt(attempt.id)
        assert held is not None
        uow.save_attempt(attrs.evolve(held, last_sequence=7, error="late"))
    with repo.transaction() as uow:
        stored = uow.get_attempt(attempt.id)
    assert stored is not None and (stored.last_sequence, stored.error) == (7, "late")


def test_a_rolled_back_savepoint_undoes_an_attempt_write_inside_it(repo: SqlRepository) -> None:
    _, (recipient,), (attempt,) = _calls(repo)

    def end_the_call_then_fail() -> None:
        with repo.transaction() as inner:
            held = inner.get_attempt(attempt.id)
            assert held is not None
            inner.save_attempt(_ended(held))
            raise LookupError("the dispatch failed")

    with repo.transaction() as uow:
        with pytest.raises(LookupError):
            end_the_call_then_fail()  # in a savepoint of the outer transaction
        assert uow.get_attempt(attempt.id) == attempt
    with repo.transaction() as uow:
        assert uow.get_attempt(attempt.id) == attempt
        assert uow.get_recipient(recipient.id) == recipient


def test_two_calls_ended_in_one_transaction_are_both_stored(repo: SqlRepository) -> None:
    campaign, recipients, attempts = _calls(repo, 2)
    with repo.transaction() as uow:
        for attempt, recipient in zip(attempts, recipients, strict=True):
            held = uow.get_attempt(attempt.id)
            assert held is not None
            uow.save_attempt(_ended(held))
            stored = uow.get_recipient(recipient.id)
            uow.save_recipient(_completed(stored), stored)
    with repo.transaction() as uow:
        assert [uow.get_attempt(a.id) for a in attempts] == [_ended(a) for a in attempts]
        assert uow.get_campaign(campaign.id).counters.completed == 2


def test_a_stale_claim_is_refused_at_once_and_stores_nothing(repo: SqlRepository) -> None:
    _, (recipient,), (attempt,) = _calls(repo)
    with repo.transaction() as uow:
        held = uow.get_attempt(attempt.id)
        assert held is not None
        uow.save_attempt(attrs.evolve(held, claim_token=held.claim_token + 1, worker_id="w2"))
    with repo.transaction() as uow:
        held = uow.get_attempt(attempt.id)
        assert held is not None
        with pytest.raises(StaleClaim):
            uow.save_attempt(_ended(attrs.evolve(held, claim_token=attempt.claim_token)))
        stored = uow.get_recipient(recipient.id)
        uow.save_recipient(attrs.evolve(stored, error="noted"), stored)
    with repo.transaction() as uow:
        stored_attempt = uow.get_attempt(attempt.id)
        assert stored_attempt is not None
        assert (stored_attempt.status, stored_attempt.worker_id) == (AttemptStatus.PLACED, "w2")
        assert uow.get_recipient(recipient.id).error == "noted"


@pytest.mark.postgres
def test_a_transaction_whose_statement_failed_is_not_reported_committed(pg_url: str) -> None:
    repo = connect(pg_url)

    def rename_then_fail_and_carry_on(recipient: Recipient, attempt: Attempt) -> None:
        with repo.transaction() as uow:
            stored = uow.get_recipient(recipient.id)
            uow.save_recipient(attrs.evolve(stored, first_name="Ada"), stored)
            held = uow.get_attempt(attempt.id)
            assert held is not None
            # another attempt has this call id: the unique index refuses it; the error
            # is swallowed without a savepoint, and the block goes on to commit
            with contextlib.suppress(Exception):
                uow.save_attempt(attrs.evolve(held, external_call_id="call-1"))

    try:
        _, (recipient, _), (attempt, _) = _calls(repo, 2)
        with pytest.raises(RepositoryError, match="rolled back"):
            rename_then_fail_and_carry_on(recipient, attempt)
        with repo.transaction() as uow:
            assert uow.get_recipient(recipient.id).first_name == recipient.first_name
    finally:
        repo.close()

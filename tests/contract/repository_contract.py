"""The repository contract: behaviour every :class:`outdial.ports.Repository` must have.

An adapter's test module subclasses :class:`RepositoryContract` and provides a
``repo`` fixture that returns a fresh, empty repository::

    class TestInMemoryRepository(RepositoryContract):
        @pytest.fixture
        def repo(self) -> Repository:
            return InMemoryRepository()

The tests speak only through the ``Repository`` / ``UnitOfWork`` protocols, with
aware datetimes, so the in-memory, SQLite and PostgreSQL adapters run them
unchanged. The factories (:func:`make_campaign`, :func:`make_recipient`,
:func:`make_attempt`) are public for adapter-specific tests too.
"""

from __future__ import annotations

import contextlib
import random
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import attrs
import pytest

from outdial.calendar import BusinessHours
from outdial.campaign import (
    AgentSettings,
    Campaign,
    CampaignCounters,
    CampaignStatus,
    ScheduleType,
)
from outdial.errors import NotFound, RepositoryError, StaleClaim, StaleRead
from outdial.outcomes import CallOutcome
from outdial.ports import Repository, UnitOfWork
from outdial.recipient import (
    RECIPIENT_TRANSITIONS,
    Attempt,
    AttemptStatus,
    Recipient,
    RecipientStatus,
)
from outdial.retry import RetryPolicy

__all__ = [
    "OTHER_WORKSPACE",
    "T0",
    "WORKSPACE",
    "RepositoryContract",
    "make_attempt",
    "make_campaign",
    "make_recipient",
    "phone",
]

UTC = timezone.utc
T0 = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
WORKSPACE = "ws-alpha"
OTHER_WORKSPACE = "ws-beta"
S = RecipientStatus


# -- factories ------------------------------------------------------------------------------


def new_id() -> str:
    return str(uuid.uuid4())


def phone(n: int) -> str:
    """A distinct E.164 number for each ``n`` (0 <= n < 10,000,000)."""
    return f"+1212{n:07d}"


def make_campaign(**changes: Any) -> Campaign:
    """A draft campaign in :data:`WORKSPACE` created at :data:`T0`; ``changes`` override."""
    fields: dict[str, Any] = {
        "id": new_id(),
        "workspace_id": WORKSPACE,
        "created_at": T0,
        "name": "Spring follow-up",
    }
    fields.update(changes)
    return Campaign(**fields)


def make_recipient(campaign: Campaign, number: str, **changes: Any) -> Recipient:
    """A pending recipient of ``campaign`` with phone ``number``; ``changes`` override."""
    fields: dict[str, Any] = {
        "id": new_id(),
        "campaign_id": campaign.id,
        "workspace_id": campaign.workspace_id,
        "phone": number,
        "created_at": T0,
    }
    fields.update(changes)
    return Recipient(**fields)


def make_attempt(recipient: Recipient, number: int = 1, **changes: Any) -> Attempt:
    """An attempt (dialing, provider ``"fake"``) on ``recipient`` created at :data:`T0`."""
    fields: dict[str, Any] = {
        "id": new_id(),
        "campaign_id": recipient.campaign_id,
        "recipient_id": recipient.id,
        "workspace_id": recipient.workspace_id,
        "number": number,
        "phone": recipient.phone,
        "created_at": T0,
        "provider": "fake",
    }
    fields.update(changes)
    return Attempt(**fields)


# -- helpers ---------------------------------------------------------------------------------


class Boom(Exception):
    """Raised inside a transaction to make it roll back."""


def _run_then_raise(repo: Repository, work: Callable[[UnitOfWork], object]) -> None:
    with repo.transaction() as uow:
        work(uow)
        raise Boom


def fail_after(repo: Repository, work: Callable[[UnitOfWork], object]) -> None:
    """Run ``work`` in a transaction that then raises; the exception must come out."""
    with pytest.raises(Boom):
        _run_then_raise(repo, work)


def seed(
    repo: Repository, campaign: Campaign, recipients: Sequence[Recipient] = ()
) -> list[Recipient]:
    """Store ``campaign`` and ``recipients``; returns the recipients as stored (with seq)."""
    with repo.transaction() as uow:
        uow.add_campaign(campaign)
        if recipients:
            uow.add_recipients(recipients)
    return all_recipients(repo, campaign.id)


def all_recipients(repo: Repository, campaign_id: str) -> list[Recipient]:
    with repo.transaction() as uow:
        return list(uow.list_recipients(campaign_id, page_size=100_000).items)


def move(uow: UnitOfWork, recipient_id: str, status: RecipientStatus, **changes: Any) -> Recipient:
    """Move a stored recipient along an allowed transition and save it."""
    old = uow.get_recipient(recipient_id)
    new = old.moved_to(status, **changes)
    uow.save_recipient(new, old)
    return new


def claim(uow: UnitOfWork, campaign_id: str, now: datetime, limit: int) -> list[str]:
    """Take the due recipients as a dialer would (to queued); returns their ids."""
    due = uow.due_recipients(campaign_id, now, limit)
    for r in due:
        uow.save_recipient(r.moved_to(S.QUEUED, attempts=r.attempts + 1, updated_at=now), r)
    return [r.id for r in due]


def recount(recipients: Iterable[Recipient]) -> CampaignCounters:
    """The counters recomputed from the recipients (attempts left at zero)."""
    rs = list(recipients)
    by_status = Counter(r.status for r in rs)
    return CampaignCounters(
        total=sum(by_status.values()),
        answered=sum(
            1 for r in rs if r.status is S.COMPLETED and r.outcome is CallOutcome.ANSWERED
        ),
        **{s.value: by_status.get(s, 0) for s in RecipientStatus},
    )


def ids(items: Iterable[Any]) -> list[str]:
    return [item.id for item in items]


class RepositoryContract:
    """Tests every repository adapter passes. Subclasses provide the ``repo`` fixture."""

    @pytest.fixture
    def repo(self) -> Repository:  # pragma: no cover - always overridden
        raise NotImplementedError("an adapter's test class provides a fresh repository")

    # -- transactions ---------------------------------------------------------------------

    def test_committed_changes_are_seen_by_the_next_transaction(self, repo: Repository) -> None:
        campaign = make_campaign()
        seed(repo, campaign, [make_recipient(campaign, phone(1))])
        with repo.transaction() as uow:
            assert uow.get_campaign(campaign.id).counters.total == 1

    def test_dispatch_lock_transaction_commits_like_any_other(self, repo: Repository) -> None:
        campaign = make_campaign()
        with repo.transaction(dispatch_lock=True) as uow:
            uow.add_campaign(campaign)
        with repo.transaction(dispatch_lock=True) as uow:
            assert uow.get_campaign(campaign.id).id == campaign.id

    def test_exception_rolls_back_new_campaign_recipients_and_attempts(
        self, repo: Repository
    ) -> None:
        campaign = make_campaign(status=CampaignStatus.ACTIVE)
        recipient = make_recipient(campaign, phone(1))

        def work(uow: UnitOfWork) -> None:
            uow.add_campaign(campaign)
            uow.add_recipients([recipient, make_recipient(campaign, phone(2))])
            uow.add_attempt(make_attempt(recipient, id="att-rolled-back", external_call_id="x1"))
            uow.suppress(WORKSPACE, phone(3), "opted out", T0)

        fail_after(repo, work)
        with repo.transaction() as uow:
            with pytest.raises(NotFound):
                uow.get_campaign(campaign.id)
            with pytest.raises(NotFound):
                uow.get_recipient(recipient.id)
            assert uow.get_attempt("att-rolled-back") is None
            assert uow.find_attempt("fake", "x1") is None
            assert uow.attempts_for(recipient.id) == []
            assert uow.in_flight().total == 0
            assert uow.dispatchable_campaigns() == []
            assert uow.suppressed(WORKSPACE, [phone(3)]) == set()
            assert uow.list_campaigns(WORKSPACE).total == 0
        # The same ids and phones can be stored afterwards.
        assert ids(seed(repo, campaign, [recipient])) == [recipient.id]

    def test_exception_rolls_back_changes_to_existing_rows(self, repo: Repository) -> None:
        campaign = make_campaign(status=CampaignStatus.ACTIVE)
        stored = seed(repo, campaign, [make_recipient(campaign, phone(n)) for n in range(4)])
        first = stored[0]
        attempt = make_attempt(first, created_at=T0 - timedelta(minutes=5))
        with repo.transaction() as uow:
            uow.add_attempt(attempt)
            uow.suppress(WORKSPACE, phone(9), "opted out", T0)
            before = uow.get_campaign(campaign.id)

        def work(uow: UnitOfWork) -> None:
            uow.save_campaign(attrs.evolve(before, status=CampaignStatus.PAUSED))
            claimed = claim(uow, campaign.id, T0, 2)
            assert claimed == [stored[0].id, stored[1].id]
            uow.add_attempt(make_attempt(stored[1], created_at=T0))
            uow.save_attempt(
                attrs.evolve(
                    attempt,
                    status=AttemptStatus.ENDED,
                    outcome=CallOutcome.ANSWERED,
                    duration_seconds=30.0,
                    external_call_id="ext-1",
                )
            )
            assert uow.skip_pending(campaign.id, "terminated", T0) == 2
            assert uow.due_recipients(campaign.id, T0, 10) == []
            uow.unsuppress(WORKSPACE, phone(9))
            assert uow.get_campaign(campaign.id).counters.skipped == 2

        fail_after(repo, work)
        with repo.transaction() as uow:
            after = uow.get_campaign(campaign.id)
            assert after.status is CampaignStatus.ACTIVE
            assert after.version == before.version
            assert after.counters == before.counters
            assert [uow.get_recipient(r.id) for r in stored] == stored
            assert ids(uow.due_recipients(campaign.id, T0, 10)) == ids(stored)
            assert uow.get_attempt(attempt.id) == attempt
            assert uow.find_attempt("fake", "ext-1") is None
            assert uow.in_flight().total == 1
            assert uow.duration_totals(campaign.id) == (0, 0.0)
            assert uow.outcome_counts(campaign.id) == {}
            assert uow.dial_stats(campaign.id, T0, T0 - timedelta(hours=1)).starts_today == 1
            assert uow.suppressed(WORKSPACE, [phone(9)]) == {phone(9)}

    # -- campaigns --------------------------------------------------------------------------

    def test_campaign_round_trips_with_every_field(self, repo: Repository) -> None:
        new_york = ZoneInfo("America/New_York")
        campaign = make_campaign(
            name="Renewals",
            description="Second quarter renewals",
            status=CampaignStatus.READY,
            agent=AgentSettings(
                agent_id="agent-1",
                provider="vapi",
                external_agent_id="asst_123",
                phone_number="+12125550100",
                phone_number_id="pn_1",
                fallback_provider="twilio",
                prompt_template="Hello {first_name}",
                greeting_template="Hi!",
                options={"voice": "alloy", "speed": "1.1"},
            ),
            schedule_type=ScheduleType.SCHEDULED,
            scheduled_start_at=datetime(2026, 3, 9, 9, 0, tzinfo=new_york),
            expires_at=T0 + timedelta(days=30),
            timezone="America/New_York",
            business_hours=BusinessHours.weekly(
                "America/New_York", {"mon-fri": [("09:00", "17:00")]}
            ),
            rule_set="us",
            default_region="US",
            concurrency_limit=5,
            calls_per_minute=12.5,
            min_spacing=timedelta(seconds=3),
            daily_cap=500,
            retry_policy=RetryPolicy(max_attempts=4),
            prompt_variables={"product": "Widget", "tone": "warm"},
            csv_column_headers=("phone", "first_name", "plan"),
            max_recipients=2_000,
            created_by="user-7",
            updated_at=T0 + timedelta(minutes=1),
            status_reason="wizard finished",
        )
        with repo.transaction() as uow:
            uow.add_campaign(campaign)
        with repo.transaction() as uow:
            got = uow.get_campaign(campaign.id, WORKSPACE)
        assert got == campaign
        assert dict(got.agent.options) == {"voice": "alloy", "speed": "1.1"}
        assert dict(got.prompt_variables) == {"product": "Widget", "tone": "warm"}

    def test_instants_come_back_equal_and_aware(self, repo: Repository) -> None:
        kolkata = timezone(timedelta(hours=5, minutes=30))
        created = datetime(2026, 3, 2, 19, 31, 7, 123456, tzinfo=kolkata)
        start = datetime(2026, 11, 1, 1, 30, tzinfo=ZoneInfo("America/New_York"), fold=1)
        campaign = make_campaign(created_at=created, scheduled_start_at=start)
        recipient = make_recipient(
            campaign, phone(1), created_at=created, next_attempt_at=start, priority=3
        )
        seed(repo, campaign, [recipient])
        attempt = make_attempt(recipient, created_at=created, placed_at=start)
        with repo.transaction() as uow:
            uow.add_attempt(attempt)
        with repo.transaction() as uow:
            got_campaign = uow.get_campaign(campaign.id)
            got_recipient = uow.get_recipient(recipient.id)
            got_attempt = uow.get_attempt(attempt.id)
        assert got_attempt is not None
        pairs = [
            (got_campaign.created_at, created),
            (got_campaign.scheduled_start_at, start),
            (got_recipient.created_at, created),
            (got_recipient.next_attempt_at, start),
            (got_attempt.created_at, created),
            (got_attempt.placed_at, start),
        ]
        for got, stored in pairs:
            assert got is not None
            assert got.utcoffset() is not None
            # Compared in UTC: under PEP 495 a wall time in a DST fold (``start``)
            # never equals a datetime of another zone, even for the same instant.
            assert got.astimezone(UTC) == stored.astimezone(UTC)

    def test_missing_campaign_is_not_found(self, repo: Repository) -> None:
        with repo.transaction() as uow, pytest.raises(NotFound) as info:
            uow.get_campaign("no-such-campaign")
        assert (info.value.kind, info.value.id) == ("campaign", "no-such-campaign")

    def test_campaign_of_another_workspace_is_not_found(self, repo: Repository) -> None:
        campaign = make_campaign(workspace_id=OTHER_WORKSPACE)
        seed(repo, campaign)
        with repo.transaction() as uow:
            assert uow.get_campaign(campaign.id, OTHER_WORKSPACE).id == campaign.id
            assert uow.get_campaign(campaign.id).id == campaign.id
            with pytest.raises(NotFound) as info:
                uow.get_campaign(campaign.id, WORKSPACE)
        assert info.value.kind == "campaign"

    def test_deleted_campaign_is_still_returned_by_id(self, repo: Repository) -> None:
        campaign = make_campaign(deleted_at=T0 + timedelta(hours=1))
        seed(repo, campaign)
        with repo.transaction() as uow:
            assert uow.get_campaign(campaign.id, WORKSPACE).deleted

    def test_campaign_id_cannot_be_added_twice(self, repo: Repository) -> None:
        campaign = make_campaign()
        seed(repo, campaign)
        with repo.transaction() as uow, pytest.raises(RepositoryError):
            uow.add_campaign(make_campaign(id=campaign.id, name="Other"))
        with repo.transaction() as uow:
            assert uow.get_campaign(campaign.id).name == campaign.name

    def test_save_campaign_bumps_version_and_returns_the_stored_value(
        self, repo: Repository
    ) -> None:
        campaign = make_campaign()
        seed(repo, campaign)
        with repo.transaction() as uow:
            current = uow.get_campaign(campaign.id)
            saved = uow.save_campaign(attrs.evolve(current, name="Renamed"))
        assert saved.version == current.version + 1
        assert saved.name == "Renamed"
        with repo.transaction() as uow:
            assert uow.get_campaign(campaign.id) == saved
            again = uow.save_campaign(attrs.evolve(saved, description="twice"))
        assert again.version == current.version + 2

    def test_stale_save_campaign_is_refused_and_changes_nothing(self, repo: Repository) -> None:
        campaign = make_campaign()
        seed(repo, campaign)
        with repo.transaction() as uow:
            read_by_a = uow.get_campaign(campaign.id)
            read_by_b = uow.get_campaign(campaign.id)
            uow.save_campaign(attrs.evolve(read_by_a, name="A wins"))
        with repo.transaction() as uow:
            with pytest.raises(StaleRead) as info:
                uow.save_campaign(attrs.evolve(read_by_b, name="B is stale"))
            assert (info.value.kind, info.value.id) == ("campaign", campaign.id)
            assert "changed since it was read" in str(info.value)
            stored = uow.get_campaign(campaign.id)
        assert (stored.name, stored.version) == ("A wins", read_by_a.version + 1)

    def test_save_campaign_keeps_the_stored_counters(self, repo: Repository) -> None:
        campaign = make_campaign()
        seed(repo, campaign, [make_recipient(campaign, phone(n)) for n in range(3)])
        with repo.transaction() as uow:
            current = uow.get_campaign(campaign.id)
            bogus = CampaignCounters(total=99, pending=99, answered=7, attempts=5)
            saved = uow.save_campaign(attrs.evolve(current, counters=bogus))
        assert saved.counters == CampaignCounters(total=3, pending=3)
        with repo.transaction() as uow:
            assert uow.get_campaign(campaign.id).counters == CampaignCounters(total=3, pending=3)

    def test_get_campaign_returns_the_current_counters(self, repo: Repository) -> None:
        campaign = make_campaign()
        stored = seed(repo, campaign, [make_recipient(campaign, phone(n)) for n in range(2)])
        with repo.transaction() as uow:
            read_before = uow.get_campaign(campaign.id)
            move(uow, stored[0].id, S.SKIPPED, error="do not call")
            assert uow.get_campaign(campaign.id).counters == CampaignCounters(
                total=2, pending=1, skipped=1
            )
        assert read_before.counters == CampaignCounters(total=2, pending=2)

    def test_campaign_settings_are_the_current_settings_whatever_the_counters(
        self, repo: Repository
    ) -> None:
        campaign = make_campaign()
        stored = seed(repo, campaign, [make_recipient(campaign, phone(n)) for n in range(2)])

        def same_but_counters(settings: Campaign, full: Campaign) -> bool:
            return attrs.evolve(settings, counters=full.counters) == full

        with repo.transaction() as uow:  # not read yet in this transaction
            settings = uow.get_campaign_settings(campaign.id)
            assert same_but_counters(settings, uow.get_campaign(campaign.id))
        with repo.transaction() as uow:
            current = uow.get_campaign(campaign.id)
            move(uow, stored[0].id, S.SKIPPED, error="do not call")
            saved = uow.save_campaign(
                attrs.evolve(current, name="Renamed", retry_policy=RetryPolicy(max_attempts=5))
            )
            move(uow, stored[1].id, S.QUEUED)
            settings = uow.get_campaign_settings(campaign.id)
            assert (settings.name, settings.max_attempts, settings.version) == (
                "Renamed",
                5,
                current.version + 1,
            )
            assert same_but_counters(settings, uow.get_campaign(campaign.id))
            assert same_but_counters(settings, saved)
        with repo.transaction() as uow:
            assert same_but_counters(uow.get_campaign_settings(campaign.id), saved)

    def test_campaign_settings_follow_a_rolled_back_savepoint(self, repo: Repository) -> None:
        campaign = make_campaign()
        seed(repo, campaign)

        def rename_in_a_savepoint_then_fail(before: Campaign) -> None:
            with repo.transaction() as savepoint:
                savepoint.save_campaign(attrs.evolve(before, name="Rolled back"))
                assert savepoint.get_campaign_settings(campaign.id).name == "Rolled back"
                raise Boom

        with repo.transaction() as uow:
            before = uow.get_campaign_settings(campaign.id)
            with pytest.raises(Boom):
                rename_in_a_savepoint_then_fail(before)
            after = uow.get_campaign_settings(campaign.id)
            assert (after.name, after.version) == (before.name, before.version)

    def test_campaign_settings_of_a_missing_campaign_are_not_found(self, repo: Repository) -> None:
        with repo.transaction() as uow, pytest.raises(NotFound) as info:
            uow.get_campaign_settings("no-such-campaign")
        assert (info.value.kind, info.value.id) == ("campaign", "no-such-campaign")

    def test_list_campaigns_newest_first_with_pages(self, repo: Repository) -> None:
        made = [
            make_campaign(name=f"Campaign {n}", created_at=T0 + timedelta(hours=n))
            for n in range(7)
        ]
        for campaign in made:
            seed(repo, campaign)
        seed(repo, make_campaign(workspace_id=OTHER_WORKSPACE, created_at=T0 + timedelta(days=9)))
        with repo.transaction() as uow:
            first = uow.list_campaigns(WORKSPACE, page=1, page_size=3)
            last = uow.list_campaigns(WORKSPACE, page=3, page_size=3)
            beyond = uow.list_campaigns(WORKSPACE, page=4, page_size=3)
        newest_first = ids(reversed(made))
        assert ids(first.items) == newest_first[:3]
        assert (first.total, first.page, first.page_size, first.total_pages) == (7, 1, 3, 3)
        assert ids(last.items) == newest_first[6:]
        assert (beyond.items, beyond.total) == ((), 7)

    def test_list_campaigns_filters_by_status_and_searches_names(self, repo: Repository) -> None:
        spring = make_campaign(name="Spring RENEWALS", status=CampaignStatus.ACTIVE)
        summer = make_campaign(
            name="Summer renewals",
            status=CampaignStatus.PAUSED,
            created_at=T0 + timedelta(hours=1),
        )
        draft = make_campaign(name="Winter outreach", created_at=T0 + timedelta(hours=2))
        for campaign in (spring, summer, draft):
            seed(repo, campaign)
        with repo.transaction() as uow:
            renewals = uow.list_campaigns(WORKSPACE, search="renewals")
            running = uow.list_campaigns(
                WORKSPACE, statuses=[CampaignStatus.ACTIVE, CampaignStatus.PAUSED]
            )
            both = uow.list_campaigns(WORKSPACE, statuses=[CampaignStatus.ACTIVE], search="renew")
            none = uow.list_campaigns(WORKSPACE, search="autumn")
        assert ids(renewals.items) == [summer.id, spring.id]
        assert ids(running.items) == [summer.id, spring.id]
        assert ids(both.items) == [spring.id]
        assert (none.items, none.total, none.total_pages) == ((), 0, 1)

    def test_list_campaigns_leaves_out_deleted_unless_asked(self, repo: Repository) -> None:
        kept = make_campaign()
        deleted = make_campaign(
            created_at=T0 + timedelta(hours=1), deleted_at=T0 + timedelta(hours=2)
        )
        seed(repo, kept)
        seed(repo, deleted)
        with repo.transaction() as uow:
            assert ids(uow.list_campaigns(WORKSPACE).items) == [kept.id]
            assert ids(uow.list_campaigns(WORKSPACE, include_deleted=True).items) == [
                deleted.id,
                kept.id,
            ]

    def test_find_recent_draft_returns_the_newest_untitled_draft_of_its_creator(
        self, repo: Repository
    ) -> None:
        since = T0 - timedelta(hours=1)
        older = make_campaign(name="", created_by="ann", created_at=T0 - timedelta(minutes=30))
        newest = make_campaign(name="Untitled Campaign", created_by="ann", created_at=T0)
        decoys = [
            make_campaign(name="Named", created_by="ann", created_at=T0 + timedelta(minutes=1)),
            make_campaign(name="", created_by="bob", created_at=T0 + timedelta(minutes=2)),
            make_campaign(name="", created_by="ann", created_at=since - timedelta(seconds=1)),
            make_campaign(
                name="",
                created_by="ann",
                created_at=T0 + timedelta(minutes=3),
                status=CampaignStatus.READY,
            ),
            make_campaign(
                name="",
                created_by="ann",
                created_at=T0 + timedelta(minutes=4),
                workspace_id=OTHER_WORKSPACE,
            ),
            make_campaign(
                name="",
                created_by="ann",
                created_at=T0 + timedelta(minutes=5),
                deleted_at=T0 + timedelta(minutes=6),
            ),
        ]
        for campaign in [older, newest, *decoys]:
            seed(repo, campaign)
        with repo.transaction() as uow:
            found = uow.find_recent_draft(WORKSPACE, "ann", since)
            assert found is not None
            assert found.id == newest.id
            assert uow.find_recent_draft(WORKSPACE, "carol", since) is None
            assert uow.find_recent_draft(WORKSPACE, "ann", T0 + timedelta(seconds=1)) is None

    def test_find_recent_draft_matches_an_anonymous_creator(self, repo: Repository) -> None:
        anonymous = make_campaign(name="", created_by=None)
        seed(repo, anonymous)
        with repo.transaction() as uow:
            found = uow.find_recent_draft(WORKSPACE, None, T0)
            assert found is not None
            assert found.id == anonymous.id
            assert uow.find_recent_draft(WORKSPACE, "ann", T0) is None

    def test_dispatchable_campaigns_are_scheduled_active_or_paused_and_not_deleted(
        self, repo: Repository
    ) -> None:
        by_status = {status: make_campaign(status=status) for status in CampaignStatus}
        other = make_campaign(status=CampaignStatus.ACTIVE, workspace_id=OTHER_WORKSPACE)
        deleted = make_campaign(status=CampaignStatus.ACTIVE, deleted_at=T0)
        for campaign in [*by_status.values(), other, deleted]:
            seed(repo, campaign)
        with repo.transaction() as uow:
            found = {c.id for c, _ in uow.dispatchable_campaigns()}
        expected = {
            by_status[CampaignStatus.SCHEDULED].id,
            by_status[CampaignStatus.ACTIVE].id,
            by_status[CampaignStatus.PAUSED].id,
            other.id,
        }
        assert found == expected

    def test_dispatchable_campaigns_come_with_current_status_and_counters(
        self, repo: Repository
    ) -> None:
        campaign = make_campaign(status=CampaignStatus.ACTIVE)
        stored = seed(repo, campaign, [make_recipient(campaign, phone(n)) for n in range(3)])
        with repo.transaction() as uow:
            ((found, counters),) = uow.dispatchable_campaigns()
            assert (found.id, found.status) == (campaign.id, CampaignStatus.ACTIVE)
            assert counters == recount(stored)
            # moves in the same transaction are counted at once
            claim(uow, campaign.id, T0, 1)
            move(uow, stored[1].id, S.SKIPPED, error="opted out", updated_at=T0)
            ((_, counters),) = uow.dispatchable_campaigns()
            assert (counters.pending, counters.queued, counters.skipped) == (1, 1, 1)
        with repo.transaction() as uow:
            ((found, counters),) = uow.dispatchable_campaigns()
            assert counters == recount(uow.list_recipients(campaign.id, page_size=100).items)
            uow.save_campaign(attrs.evolve(found, status=CampaignStatus.PAUSED))
            ((paused, _),) = uow.dispatchable_campaigns()
            assert paused.status is CampaignStatus.PAUSED

    # -- recipients -------------------------------------------------------------------------

    def test_add_recipients_assigns_seq_in_insertion_order(self, repo: Repository) -> None:
        campaign = make_campaign()
        seed(repo, campaign)
        first = [make_recipient(campaign, phone(n)) for n in (5, 3, 9)]
        second = [make_recipient(campaign, phone(n)) for n in (1, 2)]
        with repo.transaction() as uow:
            assert uow.add_recipients(first) == 3
        with repo.transaction() as uow:
            assert uow.add_recipients(second) == 2
        stored = all_recipients(repo, campaign.id)
        assert ids(stored) == ids(first + second)
        seqs = [r.seq for r in stored]
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == 5

    def test_duplicate_phone_in_a_campaign_is_skipped(self, repo: Repository) -> None:
        campaign = make_campaign()
        elsewhere = make_campaign()
        seed(repo, campaign, [make_recipient(campaign, phone(1))])
        seed(repo, elsewhere)
        batch = [
            make_recipient(campaign, phone(1), first_name="already stored"),
            make_recipient(campaign, phone(2), first_name="kept"),
            make_recipient(campaign, phone(2), first_name="twice in the batch"),
            make_recipient(campaign, phone(3), first_name="kept too"),
        ]
        with repo.transaction() as uow:
            assert uow.add_recipients(batch) == 2
            assert uow.add_recipients([make_recipient(elsewhere, phone(1))]) == 1
            assert uow.get_campaign(campaign.id).counters == CampaignCounters(total=3, pending=3)
        stored = all_recipients(repo, campaign.id)
        assert [r.phone for r in stored] == [phone(1), phone(2), phone(3)]
        assert [r.first_name for r in stored] == [None, "kept", "kept too"]

    def test_recipient_fields_round_trip(self, repo: Repository) -> None:
        campaign = make_campaign()
        recipient = make_recipient(
            campaign,
            phone(1),
            first_name="Zoë",
            last_name="O'Brien",
            email="zoe@example.com",
            company="Acme",
            variables={"plan": "gold", "renewal_date": "2026-04-01", "empty": ""},
            priority=-2,
            time_zones=("America/New_York", "America/Chicago"),
            next_attempt_at=T0 + timedelta(hours=1),
        )
        seed(repo, campaign, [recipient])
        with repo.transaction() as uow:
            got = uow.get_recipient(recipient.id)
        assert got == attrs.evolve(recipient, seq=got.seq)
        assert dict(got.variables) == {"plan": "gold", "renewal_date": "2026-04-01", "empty": ""}
        assert got.time_zones == ("America/New_York", "America/Chicago")

    def test_missing_recipient_is_not_found(self, repo: Repository) -> None:
        campaign = make_campaign()
        ghost = make_recipient(campaign, phone(1))
        seed(repo, campaign)
        with repo.transaction() as uow:
            with pytest.raises(NotFound) as info:
                uow.get_recipient(ghost.id)
            assert (info.value.kind, info.value.id) == ("recipient", ghost.id)
            with pytest.raises(NotFound):
                uow.save_recipient(attrs.evolve(ghost, status=S.SKIPPED), ghost)

    def test_recipients_of_an_unknown_campaign_are_refused(self, repo: Repository) -> None:
        ghost = make_campaign()
        with repo.transaction() as uow, pytest.raises(NotFound):
            uow.add_recipients([make_recipient(ghost, phone(1))])

    def test_save_recipient_moves_the_counters(self, repo: Repository) -> None:
        campaign = make_campaign()
        a, b, c = seed(repo, campaign, [make_recipient(campaign, phone(n)) for n in range(3)])
        with repo.transaction() as uow:
            move(uow, a.id, S.QUEUED)
            move(uow, b.id, S.QUEUED)
            move(uow, a.id, S.CALLING)
            assert uow.get_campaign(campaign.id).counters == CampaignCounters(
                total=3, pending=1, queued=1, calling=1
            )
            move(uow, a.id, S.COMPLETED, outcome=CallOutcome.ANSWERED)
            move(uow, b.id, S.COMPLETED, outcome=CallOutcome.VOICEMAIL)
            move(uow, c.id, S.FAILED, outcome=CallOutcome.INVALID_NUMBER)
        with repo.transaction() as uow:
            assert uow.get_campaign(campaign.id).counters == CampaignCounters(
                total=3, completed=2, failed=1, answered=1
            )

    def test_save_recipient_with_a_stale_previous_is_refused(self, repo: Repository) -> None:
        campaign = make_campaign()
        (recipient,) = seed(repo, campaign, [make_recipient(campaign, phone(1))])
        with repo.transaction() as uow:
            move(uow, recipient.id, S.QUEUED)
        with repo.transaction() as uow:
            with pytest.raises(StaleRead) as info:
                # ``recipient`` is the pending value read before the claim.
                uow.save_recipient(recipient.moved_to(S.SKIPPED), recipient)
            assert (info.value.kind, info.value.id) == ("recipient", recipient.id)
            assert "is queued, not pending as the caller read it" in str(info.value)
            assert uow.get_recipient(recipient.id).status is S.QUEUED
            assert uow.get_campaign(campaign.id).counters == CampaignCounters(total=1, queued=1)

    @pytest.mark.parametrize("seed_value", range(4))
    def test_counters_equal_a_recount_after_random_moves(
        self, repo: Repository, seed_value: int
    ) -> None:
        rng = random.Random(seed_value)
        campaign = make_campaign(status=CampaignStatus.ACTIVE)
        stored = seed(
            repo,
            campaign,
            [
                make_recipient(campaign, phone(n), priority=rng.choice((0, 0, 1, 5)))
                for n in range(25)
            ],
        )
        outcomes = list(CallOutcome)
        for step in range(120):
            recipient_id = rng.choice(stored).id

            def step_once(
                uow: UnitOfWork, recipient_id: str = recipient_id, step: int = step
            ) -> None:
                current = uow.get_recipient(recipient_id)
                targets = sorted(b for (a, b) in RECIPIENT_TRANSITIONS if a is current.status)
                if not targets:
                    if rng.random() < 0.1:
                        uow.skip_pending(campaign.id, "terminated", T0)
                    return
                target = rng.choice(targets)
                changes: dict[str, Any] = {"updated_at": T0 + timedelta(seconds=step)}
                if target.final or target is S.PENDING:
                    changes["outcome"] = rng.choice([*outcomes, None])
                if target is S.PENDING:
                    changes["next_attempt_at"] = rng.choice(
                        [
                            None,
                            T0 - timedelta(minutes=1),
                            T0 + timedelta(minutes=rng.randint(1, 90)),
                        ]
                    )
                    changes["priority"] = rng.choice((0, 1, 5))
                uow.save_recipient(current.moved_to(target, **changes), current)

            if rng.random() < 0.2:
                fail_after(repo, step_once)
            else:
                with repo.transaction() as uow:
                    step_once(uow)

        now = T0 + timedelta(minutes=30)
        recipients = all_recipients(repo, campaign.id)
        with repo.transaction() as uow:
            counters = uow.get_campaign(campaign.id).counters
            outcome_counts = dict(uow.outcome_counts(campaign.id))
            due = uow.due_recipients(campaign.id, now, 1_000)
            next_due = uow.next_due_at(campaign.id, now)
        assert counters == recount(recipients)
        expected_outcomes = Counter(
            r.outcome for r in recipients if r.status.final and r.outcome is not None
        )
        assert {o: n for o, n in outcome_counts.items() if n} == dict(expected_outcomes)
        pending = [r for r in recipients if r.status is S.PENDING]
        due_now = [r for r in pending if r.next_attempt_at is None or r.next_attempt_at <= now]
        due_now.sort(key=lambda r: (-r.priority, r.seq))
        assert ids(due) == ids(due_now)
        later = [
            r.next_attempt_at for r in pending if r.next_attempt_at and r.next_attempt_at > now
        ]
        assert next_due == (min(later) if later else None)

    def test_list_recipients_in_insertion_order_with_pages(self, repo: Repository) -> None:
        campaign = make_campaign()
        made = [make_recipient(campaign, phone(n)) for n in range(12)]
        seed(repo, campaign, made)
        with repo.transaction() as uow:
            first = uow.list_recipients(campaign.id, page=1, page_size=5)
            last = uow.list_recipients(campaign.id, page=3, page_size=5)
        assert ids(first.items) == ids(made[:5])
        assert ids(last.items) == ids(made[10:])
        assert (first.total, first.total_pages, last.page) == (12, 3, 3)

    def test_list_recipients_filters_by_status_and_searches(self, repo: Repository) -> None:
        campaign = make_campaign()
        made = [
            make_recipient(campaign, "+12125550101", first_name="Alice", last_name="Smith"),
            make_recipient(campaign, "+12125550102", first_name="Bob", email="BOB@Example.com"),
            make_recipient(campaign, "+442071234567", first_name="Carol", last_name="SMITHERS"),
            make_recipient(campaign, "+12125550104", first_name="Dan"),
        ]
        alice, bob, carol, dan = seed(repo, campaign, made)
        with repo.transaction() as uow:
            move(uow, bob.id, S.SKIPPED)
            move(uow, dan.id, S.QUEUED)
        with repo.transaction() as uow:

            def found(**kw: Any) -> list[str]:
                return ids(uow.list_recipients(campaign.id, **kw).items)

            assert found(search="smith") == [alice.id, carol.id]
            assert found(search="example.COM") == [bob.id]
            assert found(search="20712") == [carol.id]
            assert found(search="alice") == [alice.id]
            assert found(statuses=[S.PENDING]) == [alice.id, carol.id]
            assert found(statuses=[S.SKIPPED, S.QUEUED]) == [bob.id, dan.id]
            assert found(statuses=[S.PENDING], search="carol") == [carol.id]
            assert found(search="nobody") == []
            filtered = uow.list_recipients(campaign.id, search="555010", page=2, page_size=2)
            assert (ids(filtered.items), filtered.total) == ([dan.id], 3)

    # -- the due queue ------------------------------------------------------------------------

    def test_due_recipients_by_priority_then_insertion_order(self, repo: Repository) -> None:
        campaign = make_campaign()
        priorities = [0, 5, 0, 1, 5, -1, 1]
        stored = seed(
            repo,
            campaign,
            [make_recipient(campaign, phone(n), priority=p) for n, p in enumerate(priorities)],
        )
        expected = [r.id for r in sorted(stored, key=lambda r: (-r.priority, r.seq))]
        with repo.transaction() as uow:
            assert ids(uow.due_recipients(campaign.id, T0, 100)) == expected
            assert ids(uow.due_recipients(campaign.id, T0, 3)) == expected[:3]
            # Asking does not claim: the same answer again.
            assert ids(uow.due_recipients(campaign.id, T0, 3)) == expected[:3]
            assert uow.due_recipients(campaign.id, T0, 0) == []

    def test_due_recipients_respects_due_times(self, repo: Repository) -> None:
        campaign = make_campaign()
        now_due, later, much_later, past_due = seed(
            repo,
            campaign,
            [
                make_recipient(campaign, phone(1)),
                make_recipient(campaign, phone(2), next_attempt_at=T0 + timedelta(minutes=10)),
                make_recipient(
                    campaign, phone(3), next_attempt_at=T0 + timedelta(hours=2), priority=9
                ),
                make_recipient(campaign, phone(4), next_attempt_at=T0 - timedelta(minutes=1)),
            ],
        )
        with repo.transaction() as uow:
            assert ids(uow.due_recipients(campaign.id, T0, 10)) == [now_due.id, past_due.id]
            assert uow.next_due_at(campaign.id, T0) == T0 + timedelta(minutes=10)
            at_ten = T0 + timedelta(minutes=10)
            assert ids(uow.due_recipients(campaign.id, at_ten, 10)) == [
                now_due.id,
                later.id,
                past_due.id,
            ]
            assert uow.next_due_at(campaign.id, at_ten) == T0 + timedelta(hours=2)
            at_two_hours = T0 + timedelta(hours=2)
            assert ids(uow.due_recipients(campaign.id, at_two_hours, 2)) == [
                much_later.id,
                now_due.id,
            ]
            assert uow.next_due_at(campaign.id, at_two_hours) is None

    def test_due_times_are_compared_as_instants_across_a_dst_fold(self, repo: Repository) -> None:
        new_york = ZoneInfo("America/New_York")
        # 2026-11-01 01:30 happens twice in New York: fold=1 is the later (06:30Z).
        first_0145 = datetime(2026, 11, 1, 1, 45, tzinfo=new_york)  # 05:45Z
        second_0130 = datetime(2026, 11, 1, 1, 30, tzinfo=new_york, fold=1)  # 06:30Z
        campaign = make_campaign()
        early, late = seed(
            repo,
            campaign,
            [
                make_recipient(campaign, phone(1), next_attempt_at=second_0130),
                make_recipient(campaign, phone(2), next_attempt_at=first_0145),
            ],
        )
        between = datetime(2026, 11, 1, 6, 0, tzinfo=UTC)
        with repo.transaction() as uow:
            assert ids(uow.due_recipients(campaign.id, between, 10)) == [late.id]
            next_due = uow.next_due_at(campaign.id, between)
            assert next_due is not None
            assert next_due.astimezone(UTC) == datetime(2026, 11, 1, 6, 30, tzinfo=UTC)
            # ``now`` in the zone itself: 01:50 (first pass) is before 01:30 (second pass).
            at_0150 = datetime(2026, 11, 1, 1, 50, tzinfo=new_york)
            assert ids(uow.due_recipients(campaign.id, at_0150, 10)) == [late.id]
            at_0131_again = datetime(2026, 11, 1, 1, 31, tzinfo=new_york, fold=1)
            assert ids(uow.due_recipients(campaign.id, at_0131_again, 10)) == [early.id, late.id]

    def test_only_pending_recipients_are_due(self, repo: Repository) -> None:
        campaign = make_campaign()
        stored = seed(repo, campaign, [make_recipient(campaign, phone(n)) for n in range(6)])
        with repo.transaction() as uow:
            move(uow, stored[0].id, S.QUEUED)
            move(uow, stored[1].id, S.QUEUED)
            move(uow, stored[1].id, S.CALLING)
            move(uow, stored[2].id, S.SKIPPED)
            move(uow, stored[3].id, S.FAILED)
            assert ids(uow.due_recipients(campaign.id, T0, 10)) == ids(stored[4:])

    def test_retry_becomes_due_at_its_time_and_keeps_its_place(self, repo: Repository) -> None:
        campaign = make_campaign()
        first, second, third = seed(
            repo, campaign, [make_recipient(campaign, phone(n)) for n in range(3)]
        )
        retry_at = T0 + timedelta(minutes=30)
        with repo.transaction() as uow:
            assert claim(uow, campaign.id, T0, 1) == [first.id]
            move(uow, first.id, S.CALLING)
            move(uow, first.id, S.PENDING, outcome=CallOutcome.NO_ANSWER, next_attempt_at=retry_at)
        with repo.transaction() as uow:
            assert ids(uow.due_recipients(campaign.id, T0, 10)) == [second.id, third.id]
            assert uow.next_due_at(campaign.id, T0) == retry_at
            assert ids(uow.due_recipients(campaign.id, retry_at, 10)) == [
                first.id,
                second.id,
                third.id,
            ]

    def test_changing_priority_or_due_time_reorders_the_queue(self, repo: Repository) -> None:
        campaign = make_campaign()
        a, b, c = seed(repo, campaign, [make_recipient(campaign, phone(n)) for n in range(3)])
        with repo.transaction() as uow:
            assert ids(uow.due_recipients(campaign.id, T0, 10)) == [a.id, b.id, c.id]
            current = uow.get_recipient(c.id)
            uow.save_recipient(attrs.evolve(current, priority=3), current)
            current = uow.get_recipient(a.id)
            deferred = attrs.evolve(current, next_attempt_at=T0 + timedelta(hours=1))
            uow.save_recipient(deferred, current)
            assert ids(uow.due_recipients(campaign.id, T0, 10)) == [c.id, b.id]
            assert uow.next_due_at(campaign.id, T0) == T0 + timedelta(hours=1)
            current = uow.get_recipient(a.id)
            uow.save_recipient(attrs.evolve(current, next_attempt_at=None), current)
            assert ids(uow.due_recipients(campaign.id, T0, 10)) == [c.id, a.id, b.id]
            assert uow.next_due_at(campaign.id, T0) is None

    def test_claiming_through_a_large_campaign_keeps_the_order(self, repo: Repository) -> None:
        rng = random.Random(7)
        campaign = make_campaign(status=CampaignStatus.ACTIVE)
        later = T0 + timedelta(hours=1)
        made = [
            make_recipient(
                campaign,
                phone(n),
                priority=rng.choice((0, 0, 0, 1, 3)),
                next_attempt_at=later if rng.random() < 0.1 else None,
            )
            for n in range(3_000)
        ]
        stored = seed(repo, campaign, made)

        def order(rs: Iterable[Recipient]) -> list[str]:
            return [r.id for r in sorted(rs, key=lambda r: (-r.priority, r.seq))]

        due_now = order(r for r in stored if r.next_attempt_at is None)
        due_later = order(r for r in stored if r.next_attempt_at is not None)
        claimed: list[str] = []
        while True:
            with repo.transaction() as uow:
                batch = claim(uow, campaign.id, T0, 250)
            if not batch:
                break
            claimed += batch
        assert claimed == due_now
        with repo.transaction() as uow:
            assert uow.next_due_at(campaign.id, T0) == later
            assert ids(uow.due_recipients(campaign.id, later, 5_000)) == due_later
            assert uow.get_campaign(campaign.id).counters == CampaignCounters(
                total=3_000, queued=len(due_now), pending=len(due_later)
            )

    def test_skip_pending_skips_only_pending_recipients(self, repo: Repository) -> None:
        campaign = make_campaign(status=CampaignStatus.ACTIVE)
        stored = seed(
            repo,
            campaign,
            [make_recipient(campaign, phone(n)) for n in range(4)]
            + [make_recipient(campaign, phone(9), next_attempt_at=T0 + timedelta(days=1))],
        )
        now = T0 + timedelta(minutes=5)
        with repo.transaction() as uow:
            move(uow, stored[0].id, S.QUEUED)
            assert uow.skip_pending(campaign.id, "campaign expired", now) == 4
            assert uow.skip_pending(campaign.id, "again", now) == 0
        with repo.transaction() as uow:
            assert uow.get_recipient(stored[0].id).status is S.QUEUED
            for r in stored[1:]:
                got = uow.get_recipient(r.id)
                assert (got.status, got.error, got.updated_at) == (
                    S.SKIPPED,
                    "campaign expired",
                    now,
                )
            assert uow.due_recipients(campaign.id, T0 + timedelta(days=2), 10) == []
            assert uow.next_due_at(campaign.id, T0) is None
            assert uow.get_campaign(campaign.id).counters == CampaignCounters(
                total=5, queued=1, skipped=4
            )

    def test_outcome_counts_count_final_recipients_by_outcome(self, repo: Repository) -> None:
        campaign = make_campaign()
        stored = seed(repo, campaign, [make_recipient(campaign, phone(n)) for n in range(6)])
        with repo.transaction() as uow:
            for r in stored[:5]:
                move(uow, r.id, S.QUEUED)
            move(uow, stored[0].id, S.COMPLETED, outcome=CallOutcome.ANSWERED)
            move(uow, stored[1].id, S.COMPLETED, outcome=CallOutcome.ANSWERED)
            move(uow, stored[2].id, S.FAILED, outcome=CallOutcome.BUSY)
            # Back to pending after no answer: not final, so not counted.
            move(uow, stored[3].id, S.PENDING, outcome=CallOutcome.NO_ANSWER)
            move(uow, stored[4].id, S.FAILED, outcome=None, error="provider refused")
            move(uow, stored[5].id, S.SKIPPED, error="suppressed")
        with repo.transaction() as uow:
            counts = {o: n for o, n in uow.outcome_counts(campaign.id).items() if n}
        assert counts == {CallOutcome.ANSWERED: 2, CallOutcome.BUSY: 1}

    # -- attempts ------------------------------------------------------------------------

    def test_attempt_round_trips_and_missing_is_none(self, repo: Repository) -> None:
        campaign = make_campaign()
        (recipient,) = seed(repo, campaign, [make_recipient(campaign, phone(1))])
        attempt = make_attempt(recipient, number=2, worker_id="worker-a", claim_token=3)
        with repo.transaction() as uow:
            uow.add_attempt(attempt)
        with repo.transaction() as uow:
            assert uow.get_attempt(attempt.id) == attempt
            assert uow.get_attempt("no-such-attempt") is None

    def test_find_attempt_by_the_providers_call_id(self, repo: Repository) -> None:
        campaign = make_campaign()
        (recipient,) = seed(repo, campaign, [make_recipient(campaign, phone(1))])
        attempt = make_attempt(recipient)
        with repo.transaction() as uow:
            uow.add_attempt(attempt)
            assert uow.find_attempt("fake", "call-1") is None
            placed = attrs.evolve(
                attempt,
                status=AttemptStatus.PLACED,
                external_call_id="call-1",
                placed_at=T0 + timedelta(seconds=1),
            )
            uow.save_attempt(placed)
        with repo.transaction() as uow:
            assert uow.find_attempt("fake", "call-1") == placed
            assert uow.find_attempt("other-provider", "call-1") is None
            assert uow.find_attempt("fake", "call-2") is None

    def test_a_providers_call_id_belongs_to_one_attempt(self, repo: Repository) -> None:
        campaign = make_campaign()
        first, second = seed(repo, campaign, [make_recipient(campaign, phone(n)) for n in (1, 2)])
        owner, other = make_attempt(first), make_attempt(second)
        placed_at = T0 + timedelta(seconds=1)
        with repo.transaction() as uow:
            uow.add_attempt(owner)
            uow.add_attempt(other)
            placed = attrs.evolve(
                owner, status=AttemptStatus.PLACED, external_call_id="call-1", placed_at=placed_at
            )
            uow.save_attempt(placed)
        taken = attrs.evolve(
            other, status=AttemptStatus.PLACED, external_call_id="call-1", placed_at=placed_at
        )
        refused: list[RepositoryError] = []
        with contextlib.suppress(RepositoryError), repo.transaction() as uow:
            try:
                uow.save_attempt(taken)
            except RepositoryError as exc:  # from save_attempt itself, typed
                refused.append(exc)
                raise
        assert len(refused) == 1 and "call-1" in str(refused[0])
        ended = attrs.evolve(
            placed,
            status=AttemptStatus.ENDED,
            outcome=CallOutcome.ANSWERED,
            ended_at=T0 + timedelta(minutes=1),
        )
        with repo.transaction() as uow:
            uow.save_attempt(ended)  # the owner keeps its call id
            assert uow.get_attempt(other.id) == other
            assert uow.find_attempt("fake", "call-1") == ended

    def test_save_attempt_with_a_stale_claim_token_is_refused(self, repo: Repository) -> None:
        campaign = make_campaign()
        (recipient,) = seed(repo, campaign, [make_recipient(campaign, phone(1))])
        attempt = make_attempt(recipient, worker_id="worker-a", claim_token=1)
        with repo.transaction() as uow:
            uow.add_attempt(attempt)
            # The owner writes with its own token.
            placed = attrs.evolve(attempt, status=AttemptStatus.PLACED, external_call_id="c-1")
            uow.save_attempt(placed)
            # Another worker takes the attempt over with a newer token.
            taken = attrs.evolve(placed, worker_id="worker-b", claim_token=2)
            uow.save_attempt(taken)
        with repo.transaction() as uow:
            late = attrs.evolve(placed, status=AttemptStatus.ENDED, outcome=CallOutcome.ANSWERED)
            with pytest.raises(StaleClaim) as info:
                uow.save_attempt(late)
            assert (info.value.attempt_id, info.value.token) == (attempt.id, 1)
            assert uow.get_attempt(attempt.id) == taken
            assert uow.in_flight().total == 1

    def test_saving_an_unknown_attempt_is_not_found(self, repo: Repository) -> None:
        campaign = make_campaign()
        (recipient,) = seed(repo, campaign, [make_recipient(campaign, phone(1))])
        with repo.transaction() as uow, pytest.raises(NotFound):
            uow.save_attempt(make_attempt(recipient))

    def test_attempts_for_a_recipient_in_number_order(self, repo: Repository) -> None:
        campaign = make_campaign()
        mine, other = seed(repo, campaign, [make_recipient(campaign, phone(n)) for n in range(2)])
        made = [make_attempt(mine, number=n, created_at=T0 + timedelta(hours=n)) for n in (2, 3, 1)]
        with repo.transaction() as uow:
            for attempt in made:
                uow.add_attempt(attempt)
            uow.add_attempt(make_attempt(other))
        with repo.transaction() as uow:
            assert [a.number for a in uow.attempts_for(mine.id)] == [1, 2, 3]
            assert uow.attempts_for("nobody") == []

    def test_attempt_starts_are_non_test_starts_since_a_time(self, repo: Repository) -> None:
        campaign = make_campaign()
        a, b, c = seed(repo, campaign, [make_recipient(campaign, phone(n)) for n in range(3)])
        starts = [T0 - timedelta(hours=30), T0 - timedelta(hours=2), T0 - timedelta(hours=1)]
        with repo.transaction() as uow:
            for n, start in reversed(list(enumerate(starts, 1))):
                uow.add_attempt(
                    make_attempt(a, number=n, created_at=start, status=AttemptStatus.ENDED)
                )
            uow.add_attempt(make_attempt(b, created_at=T0 - timedelta(minutes=5), test_call=True))
        with repo.transaction() as uow:
            got = uow.attempt_starts([a.id, b.id, c.id], T0 - timedelta(hours=24))
        assert list(got[a.id]) == starts[1:]
        assert list(got.get(b.id, [])) == []
        assert list(got.get(c.id, [])) == []

    def test_non_test_attempts_count_in_the_campaign(self, repo: Repository) -> None:
        campaign = make_campaign()
        (recipient,) = seed(repo, campaign, [make_recipient(campaign, phone(1))])
        with repo.transaction() as uow:
            uow.add_attempt(make_attempt(recipient, number=1))
            uow.add_attempt(make_attempt(recipient, number=2))
            uow.add_attempt(make_attempt(recipient, number=3, test_call=True))
        with repo.transaction() as uow:
            assert uow.get_campaign(campaign.id).counters.attempts == 2

    def _claims(
        self, repo: Repository, campaign: Campaign, extra: int = 0
    ) -> list[tuple[Attempt, Recipient, Recipient]]:
        """A round's claims on a seeded ``campaign``: first dials, a retry (other changed
        columns), a test call and an attempt already ended, then ``extra`` first dials."""
        retry_at = T0 - timedelta(minutes=5)
        stored = seed(
            repo,
            campaign,
            [
                make_recipient(campaign, phone(1)),
                make_recipient(campaign, phone(2), priority=3),
                make_recipient(campaign, phone(3), attempts=1, next_attempt_at=retry_at),
                make_recipient(campaign, phone(4)),
                make_recipient(campaign, phone(5)),
                *(make_recipient(campaign, phone(100 + n)) for n in range(extra)),
            ],
        )
        now = T0 + timedelta(minutes=1)
        claims = []
        for i, r in enumerate(stored):
            attempt = make_attempt(
                r,
                number=r.attempts + 1,
                created_at=now,
                test_call=i == 3,
                status=AttemptStatus.ENDED if i == 4 else AttemptStatus.DIALING,
            )
            queued = r.moved_to(
                S.QUEUED, attempts=r.attempts + 1, last_attempt_at=now, next_attempt_at=None
            )
            claims.append((attempt, attrs.evolve(queued, updated_at=now), r))
        return claims

    def _stored_round(self, repo: Repository, campaign: Campaign) -> tuple[object, ...]:
        """What a round left for ``campaign``, without its ids."""
        with repo.transaction() as uow:
            recipients = list(uow.list_recipients(campaign.id, page_size=1000).items)
            attempts = [
                [
                    attrs.evolve(a, id="", campaign_id="", recipient_id="")
                    for a in uow.attempts_for(r.id)
                ]
                for r in recipients
            ]
            return (
                [attrs.evolve(r, id="", campaign_id="", seq=0) for r in recipients],
                attempts,
                uow.get_campaign(campaign.id).counters,
                uow.in_flight().by_campaign.get(campaign.id, 0),
                [r.phone for r in uow.due_recipients(campaign.id, T0 + timedelta(hours=1), 10)],
            )

    def test_add_claims_stores_what_the_one_by_one_calls_store(self, repo: Repository) -> None:
        one_by_one = make_campaign(status=CampaignStatus.ACTIVE)
        batched = make_campaign(status=CampaignStatus.ACTIVE)
        singles = self._claims(repo, one_by_one)
        batch = self._claims(repo, batched)
        with repo.transaction(dispatch_lock=True) as uow:
            for attempt, recipient, previous in singles:
                uow.add_attempt(attempt)
                uow.save_recipient(recipient, previous)
        with repo.transaction(dispatch_lock=True) as uow:
            uow.add_claims(batch)
            # seen inside the transaction too
            assert uow.get_campaign(batched.id).counters == CampaignCounters(
                total=5, queued=5, attempts=4
            )
        assert self._stored_round(repo, batched) == self._stored_round(repo, one_by_one)
        with repo.transaction() as uow:
            assert [a.id for a in uow.attempts_for(batch[0][1].id)] == [batch[0][0].id]
            assert uow.get_recipient(batch[2][1].id).status is S.QUEUED

    def test_a_large_add_claims_batch_stores_what_the_one_by_one_calls_store(
        self, repo: Repository
    ) -> None:
        one_by_one = make_campaign(status=CampaignStatus.ACTIVE)
        batched = make_campaign(status=CampaignStatus.ACTIVE)
        singles = self._claims(repo, one_by_one, extra=150)
        batch = self._claims(repo, batched, extra=150)
        with repo.transaction(dispatch_lock=True) as uow:
            for attempt, recipient, previous in singles:
                uow.add_attempt(attempt)
                uow.save_recipient(recipient, previous)
        with repo.transaction(dispatch_lock=True) as uow:
            uow.add_claims(batch)
        stored = self._stored_round(repo, batched)
        assert stored == self._stored_round(repo, one_by_one)
        assert stored[2] == CampaignCounters(total=155, queued=155, attempts=154)

    def test_add_claims_with_a_stale_previous_raises_and_stores_nothing(
        self, repo: Repository
    ) -> None:
        campaign = make_campaign(status=CampaignStatus.ACTIVE)
        claims = self._claims(repo, campaign)
        before = self._stored_round(repo, campaign)
        _, taken, taken_before = claims[2]
        with repo.transaction() as uow:
            uow.save_recipient(taken, taken_before)  # another worker claimed it meanwhile
        with repo.transaction() as uow:
            stale = taken_before.moved_to(S.SKIPPED)
            with pytest.raises(RepositoryError) as single:
                uow.save_recipient(stale, taken_before)
        after_claim = self._stored_round(repo, campaign)
        assert after_claim != before
        with pytest.raises(type(single.value)) as batched, repo.transaction() as uow:
            uow.add_claims(claims)
        assert str(batched.value) == str(single.value)
        assert self._stored_round(repo, campaign) == after_claim

    def test_add_claims_with_a_taken_attempt_id_raises_and_stores_nothing(
        self, repo: Repository
    ) -> None:
        campaign = make_campaign(status=CampaignStatus.ACTIVE)
        claims = self._claims(repo, campaign)
        with repo.transaction() as uow:
            uow.add_attempt(attrs.evolve(claims[3][0], number=9))
        before = self._stored_round(repo, campaign)
        with pytest.raises(RepositoryError), repo.transaction() as uow:
            uow.add_claims(claims)
        assert self._stored_round(repo, campaign) == before

    def test_add_claims_of_an_empty_batch_changes_nothing(self, repo: Repository) -> None:
        campaign = make_campaign(status=CampaignStatus.ACTIVE)
        self._claims(repo, campaign)
        before = self._stored_round(repo, campaign)
        with repo.transaction(dispatch_lock=True) as uow:
            uow.add_claims([])
        assert self._stored_round(repo, campaign) == before

    def test_in_flight_counts_attempts_not_ended(self, repo: Repository) -> None:
        first = make_campaign(status=CampaignStatus.ACTIVE)
        second = make_campaign(status=CampaignStatus.ACTIVE)
        third = make_campaign(status=CampaignStatus.ACTIVE, workspace_id=OTHER_WORKSPACE)
        f1, f2, f3 = seed(repo, first, [make_recipient(first, phone(n)) for n in range(3)])
        (s1,) = seed(repo, second, [make_recipient(second, phone(1))])
        (t1,) = seed(repo, third, [make_recipient(third, phone(1))])
        ending = make_attempt(f3, status=AttemptStatus.PLACED)
        with repo.transaction() as uow:
            uow.add_attempt(make_attempt(f1))
            uow.add_attempt(make_attempt(f2, status=AttemptStatus.PLACED))
            uow.add_attempt(ending)
            uow.add_attempt(make_attempt(f1, number=0, status=AttemptStatus.ENDED))
            uow.add_attempt(make_attempt(s1, test_call=True))
            uow.add_attempt(make_attempt(t1))
            uow.save_attempt(attrs.evolve(ending, status=AttemptStatus.ENDED))
        with repo.transaction() as uow:
            counts = uow.in_flight()
        assert {k: v for k, v in counts.by_campaign.items() if v} == {first.id: 2, third.id: 1}
        # Test calls use provider capacity: they count for the workspace and in total.
        assert {k: v for k, v in counts.by_workspace.items() if v} == {
            WORKSPACE: 3,
            OTHER_WORKSPACE: 1,
        }
        assert counts.total == 4

    def test_dial_stats_report_recent_and_daily_starts(self, repo: Repository) -> None:
        campaign = make_campaign(status=CampaignStatus.ACTIVE)
        other = make_campaign(status=CampaignStatus.ACTIVE)
        (r,) = seed(repo, campaign, [make_recipient(campaign, phone(1))])
        (o,) = seed(repo, other, [make_recipient(other, phone(1))])
        now = T0 + timedelta(hours=3)
        day_start = T0 - timedelta(hours=1)
        offsets = [
            timedelta(hours=-2),  # before the day started
            timedelta(hours=-1),  # exactly at the day start: counts today
            timedelta(seconds=-60),  # exactly a minute ago: not in the last minute
            timedelta(seconds=-59),
            timedelta(seconds=-1),
            timedelta(0),
        ]
        with repo.transaction() as uow:
            for n, offset in enumerate(offsets, 1):
                start = (T0 if n <= 2 else now) + offset
                uow.add_attempt(
                    make_attempt(r, number=n, created_at=start, status=AttemptStatus.ENDED)
                )
            uow.add_attempt(make_attempt(r, number=99, created_at=now, test_call=True))
            uow.add_attempt(make_attempt(o, created_at=now - timedelta(seconds=5)))
        with repo.transaction() as uow:
            stats = uow.dial_stats(campaign.id, now, day_start)
            quiet = uow.dial_stats(campaign.id, T0 - timedelta(hours=5), day_start)
        assert stats.starts_since_minute == (
            now - timedelta(seconds=59),
            now - timedelta(seconds=1),
            now,
        )
        assert stats.last_start_at == now
        assert stats.starts_today == 5
        assert (quiet.starts_since_minute, quiet.last_start_at, quiet.starts_today) == (
            (),
            None,
            0,
        )

    def test_unfinished_attempts_started_before_a_time(self, repo: Repository) -> None:
        campaign = make_campaign(status=CampaignStatus.ACTIVE)
        (r,) = seed(repo, campaign, [make_recipient(campaign, phone(1))])
        old_dialing = make_attempt(r, number=1, created_at=T0 - timedelta(minutes=10))
        old_placed = make_attempt(
            r, number=2, created_at=T0 - timedelta(minutes=5), status=AttemptStatus.PLACED
        )
        old_ended = make_attempt(
            r, number=3, created_at=T0 - timedelta(minutes=20), status=AttemptStatus.ENDED
        )
        at_cutoff = make_attempt(r, number=4, created_at=T0)
        with repo.transaction() as uow:
            for attempt in (old_dialing, old_placed, old_ended, at_cutoff):
                uow.add_attempt(attempt)
        with repo.transaction() as uow:
            found = uow.unfinished_attempts(started_before=T0)
        assert sorted(ids(found)) == sorted([old_dialing.id, old_placed.id])

    def test_unfinished_attempts_are_oldest_first_whatever_order_they_were_saved_in(
        self, repo: Repository
    ) -> None:
        campaign = make_campaign(status=CampaignStatus.ACTIVE)
        (r,) = seed(repo, campaign, [make_recipient(campaign, phone(1))])
        minutes = [7, 2, 9, 4]  # minutes before T0, in the order they are recorded
        made = [
            make_attempt(r, number=n, created_at=T0 - timedelta(minutes=m))
            for n, m in enumerate(minutes, start=1)
        ]
        with repo.transaction() as uow:
            for attempt in made:
                uow.add_attempt(attempt)
        with repo.transaction() as uow:  # the youngest is saved again last
            stored = uow.get_attempt(made[1].id)
            assert stored is not None
            uow.save_attempt(stored)
        with repo.transaction() as uow:
            found = uow.unfinished_attempts(started_before=T0)
            later = uow.unfinished_attempts(started_before=T0 - timedelta(minutes=3))
        assert ids(found) == ids([made[2], made[0], made[3], made[1]])
        assert ids(later) == ids([made[2], made[0], made[3]])

    def test_duration_totals_sum_answered_ended_non_test_attempts(self, repo: Repository) -> None:
        campaign = make_campaign(status=CampaignStatus.ACTIVE)
        (r,) = seed(repo, campaign, [make_recipient(campaign, phone(1))])
        ended = {"status": AttemptStatus.ENDED}
        counted = make_attempt(
            r, number=1, outcome=CallOutcome.ANSWERED, duration_seconds=42.5, **ended
        )
        made = [
            counted,
            make_attempt(
                r, number=2, outcome=CallOutcome.ANSWERED, duration_seconds=10.25, **ended
            ),
            make_attempt(r, number=3, outcome=CallOutcome.ANSWERED, duration_seconds=None, **ended),
            make_attempt(
                r, number=4, outcome=CallOutcome.VOICEMAIL, duration_seconds=20.0, **ended
            ),
            make_attempt(
                r,
                number=5,
                outcome=CallOutcome.ANSWERED,
                duration_seconds=99.0,
                test_call=True,
                **ended,
            ),
        ]
        in_progress = make_attempt(r, number=6, status=AttemptStatus.PLACED)
        with repo.transaction() as uow:
            for attempt in [*made, in_progress]:
                uow.add_attempt(attempt)
            assert uow.duration_totals(campaign.id) == (2, 52.75)
            uow.save_attempt(
                attrs.evolve(
                    in_progress,
                    status=AttemptStatus.ENDED,
                    outcome=CallOutcome.ANSWERED,
                    duration_seconds=7.25,
                )
            )
        with repo.transaction() as uow:
            assert uow.duration_totals(campaign.id) == (3, 60.0)

    # -- suppression --------------------------------------------------------------------------

    def test_suppression_is_per_workspace_and_idempotent(self, repo: Repository) -> None:
        with repo.transaction() as uow:
            uow.suppress(WORKSPACE, phone(1), "opted out", T0)
            uow.suppress(WORKSPACE, phone(1), "opted out again", T0 + timedelta(hours=1))
            uow.suppress(WORKSPACE, phone(2), "complaint", T0)
        with repo.transaction() as uow:
            assert uow.suppressed(WORKSPACE, [phone(1), phone(2), phone(3)]) == {
                phone(1),
                phone(2),
            }
            assert uow.suppressed(OTHER_WORKSPACE, [phone(1), phone(2)]) == set()
            assert uow.suppressed(WORKSPACE, []) == set()

    def test_unsuppress_takes_a_number_off_the_list(self, repo: Repository) -> None:
        with repo.transaction() as uow:
            uow.suppress(WORKSPACE, phone(1), "opted out", T0)
            uow.suppress(OTHER_WORKSPACE, phone(1), "opted out", T0)
        with repo.transaction() as uow:
            uow.unsuppress(WORKSPACE, phone(1))
            uow.unsuppress(WORKSPACE, phone(7))  # not listed: nothing happens
        with repo.transaction() as uow:
            assert uow.suppressed(WORKSPACE, [phone(1)]) == set()
            assert uow.suppressed(OTHER_WORKSPACE, [phone(1)]) == {phone(1)}

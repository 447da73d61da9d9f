"""Checks of DESIGN.md's invariants against what a repository holds.

Used by the scenario tests, the stateful hypothesis test and the multi-worker
tests: they look only through the repository port, so any adapter can be checked.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime

from outdial.campaign import Campaign, CampaignStatus
from outdial.engine import Engine
from outdial.events import CampaignStatusChanged, DomainEvent
from outdial.ports import Repository
from outdial.recipient import Attempt, AttemptStatus, Recipient, RecipientStatus


def all_recipients(repo: Repository, campaign_id: str) -> list[Recipient]:
    out: list[Recipient] = []
    page = 1
    with repo.transaction() as uow:
        while True:
            chunk = uow.list_recipients(campaign_id, page=page, page_size=1000)
            out.extend(chunk.items)
            if page >= chunk.total_pages:
                break
            page += 1
    return out


def all_attempts(repo: Repository, recipients: Iterable[Recipient]) -> dict[str, list[Attempt]]:
    with repo.transaction() as uow:
        return {r.id: uow.attempts_for(r.id) for r in recipients}


def max_overlap(intervals: Sequence[tuple[datetime, datetime | None]], horizon: datetime) -> int:
    """The largest number of half-open intervals [start, end) open at one instant."""
    points: list[tuple[datetime, int]] = []
    for start, end in intervals:
        points.append((start, 1))
        points.append((end or horizon, -1))
    points.sort(key=lambda p: (p[0], p[1]))  # ends before starts at the same instant
    live = best = 0
    for _, delta in points:
        live += delta
        best = max(best, live)
    return best


def active_intervals(
    events: Iterable[DomainEvent], campaign_id: str, horizon: datetime
) -> list[tuple[datetime, datetime]]:
    spans: list[tuple[datetime, datetime]] = []
    since: datetime | None = None
    for e in events:
        if not isinstance(e, CampaignStatusChanged) or e.campaign_id != campaign_id:
            continue
        if e.new is CampaignStatus.ACTIVE and since is None:
            since = e.at
        elif e.new is not CampaignStatus.ACTIVE and since is not None:
            spans.append((since, e.at))
            since = None
    if since is not None:
        spans.append((since, horizon))
    return spans


def check_campaign(
    repo: Repository,
    campaign_id: str,
    *,
    now: datetime,
    engine: Engine | None = None,
    events: Sequence[DomainEvent] | None = None,
    check_windows: bool = True,
    suppressed: Iterable[str] = (),
) -> Campaign:
    """Assert invariants 1-8 for one campaign; returns the stored campaign."""
    engine = engine or Engine()
    with repo.transaction() as uow:
        campaign = uow.get_campaign(campaign_id)
    recipients = all_recipients(repo, campaign_id)
    attempts = all_attempts(repo, recipients)

    # 8. counters equal the recipients' states
    counts = Counter(r.status for r in recipients)
    c = campaign.counters
    assert c.total == len(recipients), (c, len(recipients))
    for status in RecipientStatus:
        assert getattr(c, status.value) == counts.get(status, 0), (status, c, counts)
    answered = sum(
        1 for r in recipients if r.status is RecipientStatus.COMPLETED and r.outcome == "answered"
    )
    assert c.answered == answered

    every: list[Attempt] = [a for lst in attempts.values() for a in lst]
    for r in recipients:
        mine = attempts[r.id]
        live = [a for a in mine if a.status is not AttemptStatus.ENDED]
        # 1. never two attempts in flight for one recipient
        assert len(live) <= 1, (r.id, live)
        # a recipient is in flight exactly when it has an attempt in flight
        assert (len(live) == 1) == r.status.in_flight, (r, live)
        # 4. attempts never exceed max attempts
        counted = [a for a in mine if not (a.status is AttemptStatus.ENDED and a.outcome is None)]
        assert len(counted) <= campaign.max_attempts, (r.id, len(counted))
        assert r.attempts == len(counted), (r.id, r.attempts, len(counted))
        # 7. results move forward only: ended attempts have a final state
        for a in mine:
            if a.status is AttemptStatus.ENDED:
                assert a.ended_at is not None and a.ended_at >= a.created_at
        # 3. no call outside the permitted window
        if check_windows:
            try:
                calendar = engine.permitted_calendar(campaign, r)
            except Exception:
                calendar = None
            for a in mine:
                assert calendar is not None, f"dialled {r.phone} with no permitted window"
                assert calendar.is_open(a.created_at), (r.phone, a.created_at)
        # 5. suppressed numbers are never dialled
        if r.phone in set(suppressed):
            assert not mine, f"suppressed {r.phone} was dialled"

    # 2. in-flight calls never exceed the campaign's concurrency limit
    spans = [(a.created_at, a.ended_at) for a in every if not a.test_call]
    assert max_overlap(spans, now) <= campaign.concurrency_limit

    # 6. no new call while the campaign is not active
    if events is not None:
        actives = active_intervals(events, campaign_id, now)
        for a in every:
            if a.test_call:
                continue
            assert any(s <= a.created_at < e for s, e in actives) or any(
                s <= a.created_at == e for s, e in actives
            ), f"attempt at {a.created_at} outside active periods {actives}"

    # 8. a campaign completes by itself when nothing is left to dial
    if campaign.status is CampaignStatus.ACTIVE:
        assert c.remaining > 0 or c.total == 0
    return campaign

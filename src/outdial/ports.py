"""Ports: the interfaces the core and the runners need from the outside world.

They speak the domain's language (campaigns, recipients, attempts, call
events), never SQL or HTTP. Adapters implement them:

- repository: :mod:`outdial.testing` (in memory), :mod:`outdial.sql`
- call provider: :mod:`outdial.testing` (scripted fake), :mod:`outdial.simulation`,
  :mod:`outdial.providers` (Twilio, Vapi, Exotel, Retell, ElevenLabs)
- clock: :class:`SystemClock` here, ``VirtualClock`` in :mod:`outdial.simulation`
- event sink: :class:`outdial.events.EventBus`
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

import attrs

from outdial.campaign import AgentSettings, Campaign, CampaignCounters, CampaignStatus
from outdial.errors import ConfigurationError
from outdial.events import DomainEvent
from outdial.outcomes import CallOutcome
from outdial.recipient import Attempt, Recipient, RecipientStatus

__all__ = [
    "AsyncCallProvider",
    "CallEvent",
    "CallProvider",
    "CallStatus",
    "Clock",
    "DialRequest",
    "DialStats",
    "EventSink",
    "EventSource",
    "InFlightCounts",
    "Page",
    "PlacedCall",
    "Repository",
    "SystemClock",
    "UnitOfWork",
    "WebhookRequest",
    "page_bounds",
]


# -- clock and events -----------------------------------------------------------


class Clock(Protocol):
    """Where the runners get ``now``. The core never reads a clock itself."""

    def now(self) -> datetime: ...


class SystemClock:
    """The real clock (UTC)."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def monotonic(self) -> float:
        return time.monotonic()


class EventSink(Protocol):
    def emit(self, event: DomainEvent) -> None: ...


# -- call providers ----------------------------------------------------------------


class CallStatus(str, enum.Enum):
    """Progress of a call as a provider reports it."""

    QUEUED = "queued"
    RINGING = "ringing"
    IN_PROGRESS = "in_progress"
    ENDED = "ended"

    def __str__(self) -> str:
        return self.value


def _frozen(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


@attrs.frozen
class DialRequest:
    """Everything a provider needs to place one call."""

    attempt_id: str
    campaign_id: str
    workspace_id: str
    recipient_id: str
    to: str  # E.164
    agent: AgentSettings
    attempt_number: int = 1
    caller_id: str | None = None
    variables: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen)
    prompt: str | None = None
    greeting: str | None = None
    test_call: bool = False


@attrs.frozen
class PlacedCall:
    """A provider accepted a call."""

    provider: str
    external_call_id: str
    status: CallStatus = CallStatus.QUEUED
    raw: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen, eq=False, repr=False)


@attrs.frozen
class CallEvent:
    """A provider's report about a call (webhook, status fetch or simulator).

    ``attempt_id`` is outdial's id when the provider echoes it back (status
    callback URL, metadata, custom field); ``external_call_id`` the provider's.
    ``sequence`` orders events of one call when the provider numbers them.
    A final event has ``status == ENDED`` and an ``outcome``; ``retryable``
    is the provider's own view (``None``: let the retry policy decide).
    """

    provider: str
    status: CallStatus
    external_call_id: str | None = None
    attempt_id: str | None = None
    outcome: CallOutcome | None = None
    retryable: bool | None = None
    sequence: int | None = None
    occurred_at: datetime | None = None
    duration_seconds: float | None = None
    retry_after: timedelta | None = None
    raw_status: str | None = None
    error: str | None = None
    event_id: str | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen, eq=False, repr=False)

    @property
    def final(self) -> bool:
        return self.status is CallStatus.ENDED


@attrs.frozen
class WebhookRequest:
    """A framework-neutral HTTP request as a webhook endpoint received it."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lname:
                return value
        return None


class CallProvider(Protocol):
    """A voice provider, synchronous shape.

    ``place_call`` raises :class:`~outdial.errors.ProviderError` subclasses;
    ``error.placed`` is False when the call certainly was not placed and None
    when that is unknown (the attempt then goes to reconciliation).

    ``fetch_call`` is used for reconciliation after a crash: it returns the
    provider's current view of the call made for ``attempt_id`` (by external id
    when known), ``None`` when the provider certainly has no such call, and
    raises ``ProviderError`` when it cannot tell.
    """

    name: str

    def place_call(self, request: DialRequest) -> PlacedCall: ...

    def cancel_call(self, external_call_id: str) -> None: ...

    def fetch_call(self, *, attempt_id: str, external_call_id: str | None) -> CallEvent | None: ...


class AsyncCallProvider(Protocol):
    """The asyncio twin of :class:`CallProvider`."""

    name: str

    async def place_call(self, request: DialRequest) -> PlacedCall: ...

    async def cancel_call(self, external_call_id: str) -> None: ...

    async def fetch_call(
        self, *, attempt_id: str, external_call_id: str | None
    ) -> CallEvent | None: ...


@runtime_checkable
class EventSource(Protocol):
    """A provider that produces call events itself (simulator, fakes).

    Runners with a virtual clock ask ``next_event_at`` to know how far to
    advance, and collect due events with ``due_events(now)``.

    ``next_event_at()`` is the earliest instant at which ``due_events`` returns
    something (``None``: nothing pending), and the virtual-time runner relies on
    it: it asks for events only once that instant has come. A source that
    announces an instant too early costs one empty ask; one that holds events
    earlier than it announces has them delivered at the announced instant.
    """

    def next_event_at(self) -> datetime | None: ...

    def due_events(self, now: datetime) -> list[CallEvent]: ...


# -- repository ----------------------------------------------------------------------


@attrs.frozen
class Page:
    """One page of a listing."""

    items: tuple[Any, ...]
    page: int
    page_size: int
    total: int

    @property
    def total_pages(self) -> int:
        return max(1, -(-self.total // self.page_size))


def page_bounds(page: int, page_size: int) -> tuple[int, int]:
    """``(offset, limit)`` of a 1-based ``page``; every adapter's listings use it, so they
    refuse the same bad input with the same :class:`ConfigurationError`."""
    if page < 1:
        raise ConfigurationError("page", page, "must be 1 or more")
    if page_size < 1:
        raise ConfigurationError("page_size", page_size, "must be 1 or more")
    return (page - 1) * page_size, page_size


@attrs.frozen
class InFlightCounts:
    """Attempts in flight (not ended), by campaign, by workspace and in all."""

    by_campaign: Mapping[str, int] = attrs.field(factory=dict, converter=_frozen)
    by_workspace: Mapping[str, int] = attrs.field(factory=dict, converter=_frozen)
    total: int = 0


@attrs.frozen
class DialStats:
    """What pacing and the daily cap need to know about a campaign's recent starts."""

    starts_since_minute: tuple[datetime, ...] = ()  # attempt starts in the last 60 s, sorted
    last_start_at: datetime | None = None
    starts_today: int = 0  # since the campaign-local midnight given


class UnitOfWork(Protocol):
    """One transaction. Changes are visible to others only after the block exits
    without error; an exception rolls everything back.

    Adapters keep the campaign counters equal to the recipients' states in the
    same transaction (invariant 8): ``save_recipient`` gets the previous value
    so the adapter can move the counters, ``add_attempt`` counts attempts.
    """

    # campaigns
    def add_campaign(self, campaign: Campaign) -> None: ...
    def get_campaign(self, campaign_id: str, workspace_id: str | None = None) -> Campaign: ...
    def get_campaign_settings(self, campaign_id: str) -> Campaign:
        """The campaign for a caller that reads no counts: its status and settings are
        current (as :meth:`get_campaign` returns them), its ``counters`` may be those of
        an earlier read. Deciding a call's result needs the retry policy, hours and
        rules, never the counts, and adapters whose counters move on every write can
        skip building them. ``NotFound`` if the campaign does not exist."""
        ...

    def save_campaign(self, campaign: Campaign) -> Campaign:
        """Store ``campaign`` (status, settings; counters are the adapter's) and return the
        stored value with ``version`` incremented. Raises ``StaleRead`` (kind
        ``"campaign"``) if ``campaign.version`` is not the stored version."""
        ...

    def list_campaigns(
        self,
        workspace_id: str,
        *,
        statuses: Sequence[CampaignStatus] = (),
        search: str | None = None,
        page: int = 1,
        page_size: int = 20,
        include_deleted: bool = False,
    ) -> Page: ...
    def find_recent_draft(
        self, workspace_id: str, created_by: str | None, since: datetime
    ) -> Campaign | None: ...
    def dispatchable_campaigns(self) -> list[tuple[Campaign, CampaignCounters]]:
        """Campaigns the engine must look at (scheduled, active and paused, not deleted),
        oldest first, each with its current counters.

        The campaign's status and settings are current; its own ``counters`` field may
        be older than the pair's (an adapter that keeps counters apart from the campaign
        need not build a new ``Campaign`` each time they move): read the pair's."""
        ...

    # recipients
    def add_recipients(self, recipients: Sequence[Recipient]) -> int:
        """Insert; a phone already in the same campaign is skipped. Returns how many were
        inserted. Assigns ``seq`` in insertion order; counters move."""
        ...

    def get_recipient(self, recipient_id: str) -> Recipient: ...
    def save_recipient(self, recipient: Recipient, previous: Recipient) -> None:
        """Store ``recipient`` and move the counters from ``previous``'s status to its
        own: a compare-and-set on the status the caller read. Raises ``StaleRead``
        (kind ``"recipient"``) if the stored status is not ``previous.status``."""
        ...

    def list_recipients(
        self,
        campaign_id: str,
        *,
        statuses: Sequence[RecipientStatus] = (),
        search: str | None = None,
        page: int = 1,
        page_size: int = 50,
    ) -> Page: ...
    def due_recipients(self, campaign_id: str, now: datetime, limit: int) -> list[Recipient]:
        """Pending recipients with ``next_attempt_at`` None or <= now, highest priority
        first, then insertion order. Cost must not grow with campaign size."""
        ...

    def next_due_at(self, campaign_id: str, now: datetime) -> datetime | None:
        """Earliest ``next_attempt_at`` > now among pending recipients."""
        ...

    def skip_pending(self, campaign_id: str, reason: str, now: datetime) -> int:
        """Every pending recipient becomes skipped with ``error = reason``."""
        ...

    def outcome_counts(self, campaign_id: str) -> Mapping[CallOutcome, int]:
        """Final recipients by their last outcome."""
        ...

    def duration_totals(self, campaign_id: str) -> tuple[int, float]:
        """(answered attempts with a duration, their total seconds)."""
        ...

    # attempts
    def add_attempt(self, attempt: Attempt) -> None: ...
    def add_claims(self, claims: Sequence[tuple[Attempt, Recipient, Recipient]]) -> None:
        """Store a round's claims at once: each ``(attempt, recipient, previous)`` is
        exactly ``add_attempt(attempt); save_recipient(recipient, previous)``, in order
        (same stored values, same counter moves), with fewer round trips.

        All or nothing: it raises what those calls would raise (``RepositoryError``
        for a stale ``previous`` or a second attempt in flight, ``NotFound``...) and
        then stores nothing of the batch. An empty batch does nothing.
        """
        ...

    def get_attempt(self, attempt_id: str) -> Attempt | None: ...
    def find_attempt(self, provider: str, external_call_id: str) -> Attempt | None: ...
    def save_attempt(self, attempt: Attempt) -> None:
        """Update an attempt; raises ``StaleClaim`` when the stored ``claim_token``
        differs from ``attempt.claim_token`` (a newer claim owns it)."""
        ...

    def attempts_for(self, recipient_id: str) -> list[Attempt]: ...
    def attempt_starts(
        self, recipient_ids: Iterable[str], since: datetime
    ) -> Mapping[str, list[datetime]]:
        """Start instants (>= since) of non-test attempts, per recipient, sorted."""
        ...

    def in_flight(self) -> InFlightCounts: ...
    def dial_stats(self, campaign_id: str, now: datetime, day_start: datetime) -> DialStats: ...
    def unfinished_attempts(self, *, started_before: datetime) -> list[Attempt]:
        """Attempts not ended whose ``created_at`` < started_before (reconciliation)."""
        ...

    # suppression (do-not-call), per workspace
    def suppress(self, workspace_id: str, phone: str, reason: str, now: datetime) -> None: ...
    def unsuppress(self, workspace_id: str, phone: str) -> None: ...
    def suppressed(self, workspace_id: str, phones: Iterable[str]) -> set[str]: ...


class Repository(Protocol):
    """A store of campaigns. ``transaction()`` opens a unit of work.

    ``dispatch_lock=True`` asks for the lock that serialises claims (capacity
    checks) between workers: in SQLite ``BEGIN IMMEDIATE``, in PostgreSQL an
    advisory transaction lock, in memory a mutex.
    """

    blocking: bool  # True when calls do I/O (async runners offload them to a thread)

    def transaction(self, *, dispatch_lock: bool = False) -> AbstractContextManager[UnitOfWork]: ...

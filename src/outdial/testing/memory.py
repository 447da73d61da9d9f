"""An in-memory :class:`~outdial.ports.Repository` for tests, simulations and notebooks.

Everything lives in Python dicts behind one :class:`threading.RLock`:

- **Transactions.** ``transaction()`` holds the lock for the whole block, so
  transactions are serialised and the *dispatch lock* of the port is implied
  (``dispatch_lock=True`` asks for nothing more). Nested ``transaction()`` blocks
  on the same thread act as savepoints and share the outer block's unit of work.
  An exception inside a block rolls back
  every change made in it: each write records an *undo* step in a journal, and
  the steps run in reverse order. Nothing copies the whole state, so a rollback
  costs what the block wrote, not what the store holds. The journal is emptied
  when the outermost block ends: its steps refer to the unit of work, which
  refers to the journal, and left alone that cycle (with every value the
  transaction replaced) would wait for the garbage collector.
- **Counters** (invariant 8) move in the same write that changes a recipient
  (``add_recipients``, ``save_recipient``, ``skip_pending``) or adds a
  non-test attempt; ``get_campaign`` always returns the current counters
  (``get_campaign_settings`` the value last built, whose counters may lag) and
  ``save_campaign`` ignores the caller's copy.
- **Claims stay cheap.** Per campaign, pending recipients are indexed by two
  heaps: *waiting* ``(due_at, seq)`` entries for recipients with a future
  ``next_attempt_at``, and *ready* integer keys that order ``(-priority, seq)``.
  ``due_recipients`` first moves the waiting entries that fell due to the ready
  heap, then pops the ready heap. Entries are not searched for when a recipient
  changes (lazy deletion): an entry is checked against the recipient's current
  state when it reaches the top of a heap, and dropped if it no longer matches
  (a claimed recipient's entry, usually the top, is dropped by the claim itself).
  So ``save_recipient`` is ``O(log n)`` and a claim costs
  ``O(limit · log n)`` whatever the campaign's size.
- **Memory.** A recipient costs its frozen value, a slot in two dicts, a set
  entry for its phone and an integer key in the ready heap (no per-recipient
  wrapper objects).
- **Rows.** Ended attempts and final recipients (without ``history``) are kept as
  *rows*, plain tuples of their fields' atomic values, and rebuilt as equal values
  when read (a new value on each read). The garbage collector untracks such a
  tuple, where it walks every stored value object in each full collection: at
  100,000 recipients the store would otherwise be most of what it walks. Values
  still in play (pending, queued or calling recipients, attempts in flight) are
  kept as they are: the hot path reads them without rebuilding anything.

In-flight counts (:meth:`InMemoryUnitOfWork.in_flight`) are kept as counters.
Test calls use the provider's capacity, so they count in ``by_workspace`` and
``total`` but not in ``by_campaign`` (a test call is not part of a campaign's
dialling), nor in a campaign's ``attempts`` counter, dial statistics or
attempt starts.
"""

from __future__ import annotations

import bisect
import enum
import heapq
import itertools
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from outdial._attrs import copier, maker, replace
from outdial._time import UTC, to_utc
from outdial.campaign import Campaign, CampaignCounters, CampaignStatus
from outdial.errors import NotFound, RepositoryError, StaleClaim, StaleRead
from outdial.outcomes import CallOutcome
from outdial.ports import DialStats, InFlightCounts, Page, page_bounds
from outdial.recipient import Attempt, AttemptStatus, Recipient, RecipientStatus

__all__ = ["InMemoryRepository", "InMemoryUnitOfWork"]

_PENDING = RecipientStatus.PENDING
_COMPLETED = RecipientStatus.COMPLETED
_ANSWERED_OUTCOME = CallOutcome.ANSWERED
_ENDED = AttemptStatus.ENDED
_FINAL = frozenset(status for status in RecipientStatus if status.final)
_UNTITLED = ("", "Untitled Campaign")
_DISPATCHABLE = frozenset({CampaignStatus.SCHEDULED, CampaignStatus.ACTIVE, CampaignStatus.PAUSED})
_MINUTE = timedelta(seconds=60)
_NEVER = datetime.min.replace(tzinfo=UTC)

#: Ready keys are ``-priority * _SPAN + seq``: integer order is (-priority, seq) order.
_SPAN = 1 << 40

#: An undo step: a function and its arguments, run as ``step[0](*step[1:])`` (a tuple
#: costs a third of a ``functools.partial``, and every write records one)
_Undo = tuple[Any, ...]


def _ready_key(priority: int, seq: int) -> int:
    return -priority * _SPAN + seq


def _utc(value: datetime, where: str) -> datetime:
    """``value`` in UTC (``NaiveDatetimeError`` if naive).

    Every comparison here is made in UTC: two wall times of one zone compare
    naively (01:30 before and after a DST fall-back are "equal"), and under
    PEP 495 a time in a fold never equals a datetime of another zone.
    """
    return value if value.tzinfo is UTC else to_utc(value, where)


def _start(attempt: Attempt) -> datetime:
    """``attempt.created_at`` in UTC (``_utc``, inline: a sort key, called for every
    attempt in flight)."""
    at = attempt.created_at
    return at if at.tzinfo is UTC else to_utc(at, "attempt.created_at")


def _due_utc(recipient: Recipient) -> datetime | None:
    """``recipient.next_attempt_at`` in UTC, None if it has none (``_utc``, inline: called
    for a recipient at each look at the due queue)."""
    at = recipient.next_attempt_at
    return at if at is None or at.tzinfo is UTC else to_utc(at, "recipient.next_attempt_at")


def _answered(recipient: Recipient) -> int:
    """1 when the recipient counts in ``answered`` (completed with outcome answered)."""
    return int(
        recipient.status is RecipientStatus.COMPLETED and recipient.outcome is CallOutcome.ANSWERED
    )


def _final_outcome(recipient: Recipient) -> CallOutcome | None:
    """The outcome a recipient contributes to ``outcome_counts`` (final ones only)."""
    return recipient.outcome if recipient.status.final else None


def _answered_duration(attempt: Attempt) -> float | None:
    """The duration an attempt contributes to ``duration_totals``, if any."""
    if (
        attempt.test_call
        or attempt.status is not _ENDED
        or attempt.outcome is not _ANSWERED_OUTCOME
    ):
        return None
    return attempt.duration_seconds


#: ``campaign`` with other ``counters``: ``_with_counters(campaign, counters)``
_with_counters = copier(Campaign, "counters")
#: ``_in_flight_counts(template, by_campaign, by_workspace, total)``, skipping converters
_in_flight_counts = copier(InFlightCounts, "by_campaign", "by_workspace", "total")


#: A value kept as a *row*: a plain tuple of atomic values (str, int, float, bool, None,
#: datetime, tuples of these), which the garbage collector stops tracking at its first
#: collection. A stored ``Recipient`` or ``Attempt`` is an object the collector walks,
#: children and all, in every full collection for as long as the store lives (~1.2 us
#: each at 100,000 recipients); a row is only glanced at by the dict that holds it, and
#: takes the same memory.
_Row = tuple[Any, ...]
_T = TypeVar("_T")


def _row_codec(
    cls: type[_T],
    *,
    enums: Mapping[str, type[enum.Enum]],
    maps: Sequence[str] = (),
    constants: Mapping[str, Any] | None = None,
) -> tuple[Callable[[_T], _Row], Callable[[_Row], _T]]:
    """``(to_row, from_row)`` for the values of the attrs class ``cls``.

    ``to_row(value)`` is the tuple of its fields in ``cls``'s field order, with the
    ``enums`` fields as their members' values (``None`` stays ``None``) and the
    ``maps`` fields as flat tuples ``(key, value, key, value, ...)`` (the collector
    untracks a tuple only once the tuples in it are untracked, one collection
    later each, so rows nest as little as they can); the ``constants`` fields are left out
    (only values that have them are turned into rows). ``from_row(row)`` builds the
    equal value back (:func:`~outdial._attrs.maker`: no ``__init__``), enum members
    and the ``constants`` included, a map through its field's converter. Both are
    generated once from ``attrs.fields(cls)``, so a field added to ``cls`` is carried
    without a change here (one that is not atomic keeps the row tracked: slower, still
    correct; the tests check that the rows are untracked).
    """
    fixed = dict(constants or {})
    klass: type = cls  # (attrs.fields is typed for attrs classes, not a type variable)
    fields = [f for f in attrs.fields(klass) if f.name not in fixed]
    names = [f.name for f in fields]
    namespace: dict[str, Any] = {"make": maker(cls, *names, *fixed)}
    items: list[str] = []
    args: list[str] = []
    for i, field in enumerate(fields):
        value = f"value.{field.name}"
        if field.name in enums:
            items.append(f"None if {value} is None else {value}._value_")
            namespace[f"members_{i}"] = {None: None, **{m._value_: m for m in enums[field.name]}}
            args.append(f"members_{i}[v_{i}]")
        elif field.name in maps:
            items.append(f"flat(chain({value}.items())) if {value} else ()")
            namespace.update(flat=tuple, chain=itertools.chain.from_iterable)
            namespace[f"convert_{i}"] = field.converter
            namespace[f"empty_{i}"] = field.converter({})
            args.append(f"convert_{i}(dict(zip(v_{i}[::2], v_{i}[1::2]))) if v_{i} else empty_{i}")
        else:
            items.append(value)
            args.append(f"v_{i}")
    for i, constant in enumerate(fixed.values()):
        namespace[f"constant_{i}"] = constant
        args.append(f"constant_{i}")
    unpacked = ", ".join(f"v_{i}" for i in range(len(fields)))
    source = [
        "def to_row(value):",
        f"    return ({', '.join(items)},)",
        "def from_row(row):",
        f"    {unpacked}, = row",
        f"    return make({', '.join(args)})",
    ]
    exec("\n".join(source), namespace)  # noqa: S102 - generated from attrs field names only
    return namespace["to_row"], namespace["from_row"]


#: an ended attempt as a row and back (its status is ended: not stored)
_attempt_row, _attempt_of = _row_codec(
    Attempt, enums={"outcome": CallOutcome}, constants={"status": _ENDED}
)
#: a final recipient without ``history`` as a row and back (see ``_keeps_as_row``)
_recipient_row, _recipient_of = _row_codec(
    Recipient,
    enums={"status": RecipientStatus, "outcome": CallOutcome},
    maps=("variables",),
    constants={"history": ()},
)


def _keeps_as_row(recipient: Recipient) -> bool:
    """Whether the store keeps ``recipient`` as a row: when it is final (it is never
    looked at by the due queue again) and has no ``history`` (a tuple of attempts,
    which a row cannot hold untracked)."""
    return recipient.status in _FINAL and not recipient.history


#: Positions in :attr:`_CampaignIndex.counts`, in :class:`CampaignCounters` field order.
_TOTAL, _ANSWERED, _ATTEMPTS = 0, 7, 8
_SLOT: dict[RecipientStatus, int] = {
    RecipientStatus.PENDING: 1,
    RecipientStatus.QUEUED: 2,
    RecipientStatus.CALLING: 3,
    RecipientStatus.COMPLETED: 4,
    RecipientStatus.FAILED: 5,
    RecipientStatus.SKIPPED: 6,
}


_ZERO_COUNTERS = CampaignCounters()
#: ``CampaignCounters(*counts)`` without ``__init__`` (plain ints, nothing to convert)
_counters = copier(CampaignCounters, *(a.name for a in attrs.fields(CampaignCounters)))
_NO_IN_FLIGHT = InFlightCounts()
_NO_CALLS: Mapping[str, str] = MappingProxyType({})


class _CampaignIndex:
    """Everything kept per campaign besides the campaign value itself.

    Counters are kept as a mutable list of ints (``counts``, in
    :class:`CampaignCounters` field order); the frozen value is built only when
    somebody reads it, and kept until the counts change again.
    """

    __slots__ = (
        "_frozen",
        "counts",
        "durations",
        "order",
        "outcomes",
        "phones",
        "rank",
        "ready",
        "starts",
        "waiting",
        "watermark",
    )

    def __init__(self, rank: int) -> None:
        self.rank = rank  # insertion order among campaigns (tie-break for listings)
        self.counts: list[int] = [0] * 9
        self._frozen: CampaignCounters | None = _ZERO_COUNTERS
        self.order: list[str] = []  # recipient ids; seq = position + 1
        self.phones: set[str] = set()
        self.ready: list[int] = []  # heap of _ready_key(priority, seq)
        self.waiting: list[tuple[datetime, int]] = []  # heap of (next_attempt_at, seq)
        self.watermark: datetime | None = None  # latest ``now`` waiting entries moved up to
        self.outcomes: dict[CallOutcome, int] = {}
        self.durations: tuple[int, float] = (0, 0.0)
        self.starts: list[datetime] = []  # created_at of non-test attempts, sorted

    @property
    def counters(self) -> CampaignCounters:
        frozen = self._frozen
        if frozen is None:
            # the counts unpacked: ``_counters(_ZERO_COUNTERS, *self.counts)`` would take
            # the interpreter's slower call path, once per round the counts moved in
            total, pending, queued, calling, completed, failed, skipped, answered, attempts = (
                self.counts
            )
            frozen = self._frozen = _counters(
                _ZERO_COUNTERS,
                total,
                pending,
                queued,
                calling,
                completed,
                failed,
                skipped,
                answered,
                attempts,
            )
        return frozen

    def move(self, old: RecipientStatus, new: RecipientStatus, answered_delta: int) -> None:
        """One recipient moved from ``old`` to ``new`` (its answered flag by the delta)."""
        counts = self.counts
        counts[_SLOT[old]] -= 1
        counts[_SLOT[new]] += 1
        counts[_ANSWERED] += answered_delta
        self._frozen = None

    def add(self, slot: int, delta: int) -> None:
        self.counts[slot] += delta
        self._frozen = None

    def restore(self, counts: list[int]) -> None:
        self.counts[:] = counts
        self._frozen = None


class _Store:
    """The whole state of one :class:`InMemoryRepository`."""

    def __init__(self) -> None:
        self.campaigns: dict[str, Campaign] = {}
        self.indexes: dict[str, _CampaignIndex] = {}
        #: Each recipient is in one of two dicts: final ones without ``history`` as rows
        #: (``_keeps_as_row``), all others as values. Pending ones are always values, so
        #: the due queue reads ``recipient_values`` alone (a row is never pending).
        self.recipient_values: dict[str, Recipient] = {}
        self.recipient_rows: dict[str, _Row] = {}
        #: Each attempt likewise: ended ones as rows, the others (in flight) as values, in
        #: the order they were attached (an update keeps its place; one that comes back in
        #: flight, or moves, is attached again at the end)
        self.attempt_values: dict[str, Attempt] = {}
        self.attempt_rows: dict[str, _Row] = {}
        #: the latest ``created_at`` (UTC) of the attempts attached in flight so far, and
        #: the ids of those in flight that were attached with an earlier one: while there
        #: are none, ``attempt_values`` is in the order of their starts
        #: (``unfinished_attempts`` stops at the first one too young)
        self.latest_start = _NEVER
        self.late_starts: set[str] = set()
        #: Each recipient's attempts as a chain, newest first: the id of its latest attempt,
        #: and for every attempt after its recipient's first, the id of the one before it
        #: (``attempt_ids``). Dicts of strings, which the garbage collector never tracks: a
        #: tuple of ids per recipient would be a new tracked object on every attempt, kept
        #: as long as the store (what triggers young collections is such net growth).
        self.latest_attempt: dict[str, str] = {}
        self.earlier_attempt: dict[str, str] = {}
        #: attempt ids by provider, then by the provider's call id (dicts of strings, which
        #: the garbage collector never tracks, where ``(provider, call id)`` keys would add
        #: a tracked tuple per call)
        self.by_external: dict[str, dict[str, str]] = {}
        self.in_flight_campaign: dict[str, int] = {}
        self.in_flight_workspace: dict[str, int] = {}
        self.in_flight_total = 0
        #: the last value :meth:`InMemoryUnitOfWork.in_flight` returned: handed out again
        #: while it equals the counts above (checked on every read)
        self.in_flight_seen = _NO_IN_FLIGHT
        self.suppressions: dict[str, dict[str, tuple[str, datetime]]] = {}
        self.campaign_rank = 0
        #: ids of :meth:`InMemoryUnitOfWork.dispatchable_campaigns`, in order (None: unknown);
        #: forgotten whenever a campaign is added or saved
        self.dispatchable: list[str] | None = None

    def own_call(self, provider: str, external_call_id: str, attempt_id: str) -> None:
        """Index ``attempt_id`` as the attempt ``provider`` knows as ``external_call_id``."""
        calls = self.by_external.get(provider)
        if calls is None:
            calls = self.by_external[provider] = {}
        calls[external_call_id] = attempt_id

    def disown_call(self, provider: str, external_call_id: str, attempt_id: str) -> None:
        """Drop that index entry, if it is ``attempt_id``'s."""
        calls = self.by_external.get(provider)
        if calls is not None and calls.get(external_call_id) == attempt_id:
            del calls[external_call_id]

    def track_start(self, attempt_id: str, start: datetime) -> None:
        """Keep ``latest_start`` and ``late_starts`` true for an attempt just attached in
        flight (at the end of ``attempt_values``) that started at ``start`` (UTC)."""
        if start >= self.latest_start:
            self.latest_start = start
        else:
            self.late_starts.add(attempt_id)

    def unlink_attempt(self, recipient_id: str, attempt_id: str) -> None:
        """Take ``attempt_id`` out of the recipient's attempts (``_attach`` links one in as
        the latest; ``KeyError`` if it is not one of them)."""
        earlier = self.earlier_attempt.pop(attempt_id, None)
        later = self.latest_attempt[recipient_id]
        if later == attempt_id:  # the usual case: the latest one
            if earlier is None:
                del self.latest_attempt[recipient_id]
            else:
                self.latest_attempt[recipient_id] = earlier
            return
        while self.earlier_attempt[later] != attempt_id:  # find the one after it
            later = self.earlier_attempt[later]
        if earlier is None:
            del self.earlier_attempt[later]
        else:
            self.earlier_attempt[later] = earlier

    def attempt_ids(self, recipient_id: str) -> list[str]:
        """The ids of the recipient's attempts, oldest first (in the order they were
        added)."""
        ids: list[str] = []
        attempt_id = self.latest_attempt.get(recipient_id)
        while attempt_id is not None:
            ids.append(attempt_id)
            attempt_id = self.earlier_attempt.get(attempt_id)
        ids.reverse()
        return ids

    def recipient(self, recipient_id: str) -> Recipient:
        """The stored recipient (a new, equal value on each read when it is kept as a
        row); ``KeyError`` if there is none."""
        rec = self.recipient_values.get(recipient_id)
        return _recipient_of(self.recipient_rows[recipient_id]) if rec is None else rec

    def keep_recipient(self, rec: Recipient) -> None:
        """Store ``rec`` in its form (row or value), in place of any stored version."""
        rid = rec.id
        if _keeps_as_row(rec):
            self.recipient_values.pop(rid, None)
            self.recipient_rows[rid] = _recipient_row(rec)
        else:
            self.recipient_rows.pop(rid, None)
            self.recipient_values[rid] = rec

    def attempt(self, attempt_id: str) -> Attempt:
        """The stored attempt (a new, equal value on each read once it has ended);
        ``KeyError`` if there is none."""
        a = self.attempt_values.get(attempt_id)
        return _attempt_of(self.attempt_rows[attempt_id]) if a is None else a

    @property
    def recipients(self) -> dict[str, Recipient]:
        """Every stored recipient by id, built on each read (for inspection)."""
        found = dict(self.recipient_values)
        found.update((rid, _recipient_of(row)) for rid, row in self.recipient_rows.items())
        return found

    @property
    def attempts(self) -> dict[str, Attempt]:
        """Every stored attempt by id, built on each read (for inspection)."""
        found = dict(self.attempt_values)
        found.update((aid, _attempt_of(row)) for aid, row in self.attempt_rows.items())
        return found


class _ClosedStore(_Store):
    """The store a closed unit of work sees: reading anything from it raises, so every
    method of a closed unit of work fails before it reads or changes anything (without
    a check of its own on each call)."""

    def __init__(self) -> None:  # no state at all: every attribute read comes here
        pass

    def __getattr__(self, name: str) -> Any:
        raise RepositoryError("this unit of work is closed: its transaction block has ended")


_CLOSED = _ClosedStore()


class InMemoryUnitOfWork:
    """One transaction on an :class:`InMemoryRepository` (implements ``UnitOfWork``).

    Only valid inside its outermost ``with repository.transaction()`` block (nested
    blocks are savepoints that share it); using it afterwards raises
    :class:`~outdial.errors.RepositoryError`. A method that raises changes nothing.
    """

    __slots__ = ("_journal", "_s")

    def __init__(self, store: _Store, journal: list[_Undo]) -> None:
        self._s = store  # _CLOSED once the transaction block has ended
        self._journal = journal

    # -- plumbing -------------------------------------------------------------------

    def _index(self, campaign_id: str) -> _CampaignIndex:
        index = self._s.indexes.get(campaign_id)
        if index is None:
            raise NotFound("campaign", campaign_id)
        return index

    def _view(self, campaign_id: str) -> Campaign:
        """The stored campaign with its current counters."""
        s = self._s
        campaign = s.campaigns[campaign_id]
        counters = s.indexes[campaign_id].counters
        if campaign.counters is not counters:
            # A cache refresh, not a change: reads always take counters from the index.
            campaign = _with_counters(campaign, counters)
            s.campaigns[campaign_id] = campaign
        return campaign

    # -- campaigns ------------------------------------------------------------------

    def add_campaign(self, campaign: Campaign) -> None:
        """Store a new campaign; its counters start at zero. ``RepositoryError`` if the
        id is taken."""
        s = self._s
        if campaign.id in s.campaigns:
            raise RepositoryError(f"campaign {campaign.id!r} already exists")
        s.campaign_rank += 1
        index = _CampaignIndex(s.campaign_rank)
        if campaign.counters is not _ZERO_COUNTERS:  # the index's counters: zero
            campaign = _with_counters(campaign, _ZERO_COUNTERS)
        s.campaigns[campaign.id] = campaign
        s.indexes[campaign.id] = index
        s.dispatchable = None

        def undo() -> None:
            del s.campaigns[campaign.id]
            del s.indexes[campaign.id]
            s.dispatchable = None

        self._journal.append((undo,))

    def get_campaign(self, campaign_id: str, workspace_id: str | None = None) -> Campaign:
        """The campaign with current counters (deleted ones too); ``NotFound`` if it does
        not exist or belongs to another workspace than ``workspace_id``."""
        s = self._s
        campaign = s.campaigns.get(campaign_id)
        if campaign is None or (workspace_id is not None and campaign.workspace_id != workspace_id):
            raise NotFound("campaign", campaign_id)
        return self._view(campaign_id)

    def get_campaign_settings(self, campaign_id: str) -> Campaign:
        """The stored campaign as last read or saved: status and settings current, counters
        those of that read (no new value is built when only the counters moved).
        ``NotFound`` if it does not exist."""
        campaign = self._s.campaigns.get(campaign_id)
        if campaign is None:
            raise NotFound("campaign", campaign_id)
        return campaign

    def save_campaign(self, campaign: Campaign) -> Campaign:
        """Store ``campaign`` with the stored counters and ``version + 1``; returns it.

        ``RepositoryError`` when ``campaign.version`` is not the stored version
        (somebody saved it since it was read); ``NotFound`` if it does not exist
        in the campaign's workspace.
        """
        s = self._s
        stored = s.campaigns.get(campaign.id)
        if stored is None or stored.workspace_id != campaign.workspace_id:
            raise NotFound("campaign", campaign.id)
        if campaign.version != stored.version:
            raise StaleRead(
                "campaign",
                campaign.id,
                f"was changed since it was read (version {campaign.version}, "
                f"stored version {stored.version})",
            )
        saved = attrs.evolve(
            campaign, counters=s.indexes[campaign.id].counters, version=stored.version + 1
        )
        s.campaigns[campaign.id] = saved
        s.dispatchable = None

        def undo() -> None:
            s.campaigns[campaign.id] = stored
            s.dispatchable = None

        self._journal.append((undo,))
        return saved

    def list_campaigns(
        self,
        workspace_id: str,
        *,
        statuses: Sequence[CampaignStatus] = (),
        search: str | None = None,
        page: int = 1,
        page_size: int = 20,
        include_deleted: bool = False,
    ) -> Page:
        """A page of the workspace's campaigns, newest first; ``search`` matches the name
        case-insensitively; deleted campaigns only with ``include_deleted``."""
        s = self._s
        start, limit = page_bounds(page, page_size)
        stop = start + limit
        wanted = frozenset(statuses)
        needle = search.casefold() if search else None
        found = [
            c
            for c in s.campaigns.values()
            if c.workspace_id == workspace_id
            and (include_deleted or c.deleted_at is None)
            and (not wanted or c.status in wanted)
            and (needle is None or needle in c.name.casefold())
        ]
        found.sort(key=lambda c: (_utc(c.created_at, ""), s.indexes[c.id].rank), reverse=True)
        items = tuple(self._view(c.id) for c in found[start:stop])
        return Page(items=items, page=page, page_size=page_size, total=len(found))

    def find_recent_draft(
        self, workspace_id: str, created_by: str | None, since: datetime
    ) -> Campaign | None:
        """The newest untitled draft (name ``""`` or ``"Untitled Campaign"``) that
        ``created_by`` created at or after ``since``, not deleted; None if none."""
        s = self._s
        since = _utc(since, "since")
        best: Campaign | None = None
        best_key: tuple[datetime, int] | None = None
        for c in s.campaigns.values():
            if (
                c.workspace_id == workspace_id
                and c.status is CampaignStatus.DRAFT
                and c.deleted_at is None
                and c.name in _UNTITLED
                and c.created_by == created_by
                and _utc(c.created_at, "") >= since
            ):
                key = (_utc(c.created_at, ""), s.indexes[c.id].rank)
                if best_key is None or key > best_key:
                    best, best_key = c, key
        return None if best is None else self._view(best.id)

    def dispatchable_campaigns(self) -> list[tuple[Campaign, CampaignCounters]]:
        """Scheduled, active and paused campaigns that are not deleted, oldest first,
        each with its current counters: the stored campaign as last read or saved (its
        own ``counters`` may be older), not a new value each time the counters move."""
        s = self._s
        ids = s.dispatchable
        if ids is None:
            found = [
                c
                for c in s.campaigns.values()
                if c.status in _DISPATCHABLE and c.deleted_at is None
            ]
            found.sort(key=lambda c: (_utc(c.created_at, ""), s.indexes[c.id].rank))
            ids = s.dispatchable = [c.id for c in found]
        campaigns, indexes = s.campaigns, s.indexes
        listed: list[tuple[Campaign, CampaignCounters]] = []
        # (a loop, not a comprehension: one function call less per dispatch round)
        for cid in ids:
            index = indexes[cid]
            # ``index.counters``, inline when they are built (reading a property calls
            # Python from C, a slower call path)
            counters = index._frozen
            listed.append((campaigns[cid], index.counters if counters is None else counters))
        return listed

    # -- recipients -----------------------------------------------------------------

    def add_recipients(self, recipients: Sequence[Recipient]) -> int:
        """Insert recipients (several campaigns allowed); returns how many were inserted.

        A phone already in the same campaign (stored or earlier in the batch) is
        skipped. ``seq`` is assigned 1, 2, 3... per campaign in insertion order.
        ``NotFound`` for an unknown campaign, ``RepositoryError`` for an id that
        is taken; either way nothing is inserted.
        """
        s = self._s
        ids: set[str] = set()
        for r in recipients:
            self._index(r.campaign_id)
            if r.id in s.recipient_values or r.id in s.recipient_rows or r.id in ids:
                raise RepositoryError(f"recipient {r.id!r} already exists")
            _due_utc(r)
            ids.add(r.id)
        by_campaign: dict[str, list[Recipient]] = {}
        for r in recipients:
            by_campaign.setdefault(r.campaign_id, []).append(r)
        inserted = 0
        for campaign_id, batch in by_campaign.items():
            inserted += self._insert(self._index(campaign_id), batch)
        return inserted

    def _insert(self, index: _CampaignIndex, batch: list[Recipient]) -> int:
        s = self._s
        before = len(index.order)
        old_counts = index.counts.copy()
        old_outcomes = dict(index.outcomes)
        moves: dict[RecipientStatus, int] = {}
        answered = 0
        for r in batch:
            if r.phone in index.phones:
                continue
            seq = len(index.order) + 1
            rec = r if r.seq == seq else replace(r, seq=seq)
            s.keep_recipient(rec)
            index.order.append(rec.id)
            index.phones.add(rec.phone)
            self._push(index, rec)
            moves[rec.status] = moves.get(rec.status, 0) + 1
            answered += _answered(rec)
            outcome = _final_outcome(rec)
            if outcome is not None:
                index.outcomes[outcome] = index.outcomes.get(outcome, 0) + 1
        added = len(index.order) - before
        if added:
            index.add(_TOTAL, added)
            index.add(_ANSWERED, answered)
            for status, n in moves.items():
                index.add(_SLOT[status], n)

        def undo() -> None:
            for rid in index.order[before:]:
                index.phones.discard(s.recipient(rid).phone)
                s.recipient_values.pop(rid, None)
                s.recipient_rows.pop(rid, None)
            del index.order[before:]
            index.restore(old_counts)
            index.outcomes = old_outcomes

        self._journal.append((undo,))
        return added

    def get_recipient(self, recipient_id: str) -> Recipient:
        """The stored recipient; ``NotFound("recipient", id)`` if there is none. A final
        recipient is a new, equal value on each read (the store keeps it as a row)."""
        s = self._s
        rec = s.recipient_values.get(recipient_id)
        if rec is None:  # final (a row) or unknown: ``s.recipient``, inline
            row = s.recipient_rows.get(recipient_id)
            if row is None:
                raise NotFound("recipient", recipient_id)
            return _recipient_of(row)
        return rec

    def save_recipient(self, recipient: Recipient, previous: Recipient) -> None:
        """Store ``recipient`` (its ``seq`` stays the stored one) and move the counters
        from the stored state to the new one.

        ``NotFound`` if it does not exist; ``RepositoryError`` if the stored
        status is not ``previous.status`` (the caller's view is stale), if it
        changes campaign, or if its new phone is already in the campaign.
        """
        s = self._s
        values = s.recipient_values
        stored = values.get(recipient.id)
        was_row = stored is None
        if stored is None:  # a final recipient, kept as a row (``s.recipient``, inline)
            row = s.recipient_rows.get(recipient.id)
            if row is None:
                raise NotFound("recipient", recipient.id)
            stored = _recipient_of(row)
        old_status = stored.status
        if old_status is not previous.status:
            raise StaleRead(
                "recipient",
                recipient.id,
                f"is {old_status.value}, not {previous.status.value} as the caller read it",
            )
        campaign_id = stored.campaign_id
        if recipient.campaign_id != campaign_id:
            raise RepositoryError(f"recipient {recipient.id!r} cannot change campaign")
        index = s.indexes[campaign_id]
        # copies keep the very same phone string: compare values only when it is another
        phone_changed = recipient.phone is not stored.phone and recipient.phone != stored.phone
        if phone_changed and recipient.phone in index.phones:
            raise RepositoryError(
                f"recipient {recipient.id!r}: {recipient.phone} is already in the campaign"
            )
        due = recipient.next_attempt_at
        if due is not None and due.tzinfo is not UTC:
            due = _utc(due, "recipient.next_attempt_at")
        # Checked: from here on nothing raises.
        new = recipient if recipient.seq == stored.seq else replace(recipient, seq=stored.seq)
        new_status = new.status
        # s.keep_recipient(new), inline: only a final one can be a row
        if new_status in _FINAL and not new.history:  # _keeps_as_row(new)
            s.recipient_rows[new.id] = _recipient_row(new)
            if not was_row:
                del values[new.id]
        else:
            values[new.id] = new
            if was_row:
                del s.recipient_rows[new.id]
        if phone_changed:
            index.phones.discard(stored.phone)
            index.phones.add(new.phone)
        counts = index.counts
        if old_status is not new_status:
            # index.move(old_status, new_status, ...), inline
            counts[_SLOT[old_status]] -= 1
            counts[_SLOT[new_status]] += 1
            index._frozen = None
        added = None  # whether the outcome counts got a new key (None: they did not move)
        if old_status in _FINAL or new_status in _FINAL:
            # answered and outcome counts (only a final recipient counts in them):
            # _answered(new) - _answered(stored), _final_outcome(stored) and
            # _final_outcome(new), inline
            answered_delta = (new_status is _COMPLETED and new.outcome is _ANSWERED_OUTCOME) - (
                old_status is _COMPLETED and stored.outcome is _ANSWERED_OUTCOME
            )
            if answered_delta:
                counts[_ANSWERED] += answered_delta
                index._frozen = None
            old_outcome = stored.outcome if old_status in _FINAL else None
            new_outcome = new.outcome if new_status in _FINAL else None
            if old_outcome is not new_outcome:
                # self._move_outcome(index, old_outcome, new_outcome), inline
                outcomes = index.outcomes
                if old_outcome is not None:
                    outcomes[old_outcome] -= 1
                added = False
                if new_outcome is not None:
                    count = outcomes.get(new_outcome)
                    added = count is None
                    outcomes[new_outcome] = 1 if count is None else count + 1
        if new_status is _PENDING:
            if not (
                old_status is _PENDING
                and new.priority == stored.priority
                and due == _due_utc(stored)
            ):
                # _push(index, new), inline
                if due is None:
                    heapq.heappush(index.ready, -new.priority * _SPAN + new.seq)  # _ready_key
                else:
                    heapq.heappush(index.waiting, (due, new.seq))
        elif old_status is _PENDING:
            # Claimed (or skipped): its entry is usually the ready heap's top, as
            # ``due_recipients`` just returned it; drop it now rather than at the next look.
            ready = index.ready
            if ready and ready[0] == -stored.priority * _SPAN + stored.seq:  # its _ready_key
                heapq.heappop(ready)
        self._journal.append((_unsave_recipient, self, stored, new, added))

    def _unsave_recipient(self, stored: Recipient, new: Recipient, added: bool | None) -> None:
        """Undo :meth:`save_recipient` (``stored`` was replaced by ``new``; ``added``:
        whether that gave the outcome counts a new key, None if they did not move)."""
        s = self._s
        index = s.indexes[stored.campaign_id]
        s.keep_recipient(stored)
        if new.phone != stored.phone:
            index.phones.discard(new.phone)
            index.phones.add(stored.phone)
        answered_delta = _answered(stored) - _answered(new)
        if new.status is not stored.status or answered_delta:
            index.move(new.status, stored.status, answered_delta)
        if added is not None:  # the outcome counts back as they were, keys included
            old_outcome, new_outcome = _final_outcome(stored), _final_outcome(new)
            outcomes = index.outcomes
            if new_outcome is not None:
                if added:
                    del outcomes[new_outcome]
                else:
                    outcomes[new_outcome] -= 1
            if old_outcome is not None:
                outcomes[old_outcome] += 1
        self._push(index, stored)  # its entries may have been dropped meanwhile

    @staticmethod
    def _move_outcome(
        index: _CampaignIndex, old: CallOutcome | None, new: CallOutcome | None
    ) -> None:
        if old is new:
            return
        if old is not None:
            index.outcomes[old] -= 1
        if new is not None:
            index.outcomes[new] = index.outcomes.get(new, 0) + 1

    def list_recipients(
        self,
        campaign_id: str,
        *,
        statuses: Sequence[RecipientStatus] = (),
        search: str | None = None,
        page: int = 1,
        page_size: int = 50,
    ) -> Page:
        """A page of the campaign's recipients in ``seq`` order; ``search`` matches
        phone, first name, last name or email case-insensitively."""
        s = self._s
        start, limit = page_bounds(page, page_size)
        stop = start + limit
        index = s.indexes.get(campaign_id)
        if index is None:
            return Page(items=(), page=page, page_size=page_size, total=0)
        recipient = s.recipient
        if not statuses and not search:
            ids = index.order[start:stop]
            return Page(
                items=tuple(map(recipient, ids)),
                page=page,
                page_size=page_size,
                total=len(index.order),
            )
        wanted = frozenset(statuses)
        needle = search.casefold() if search else None
        found = [
            r
            for r in map(recipient, index.order)
            if (not wanted or r.status in wanted) and (needle is None or _matches(r, needle))
        ]
        return Page(
            items=tuple(found[start:stop]), page=page, page_size=page_size, total=len(found)
        )

    # -- the due queue ---------------------------------------------------------------

    def _push(self, index: _CampaignIndex, rec: Recipient) -> None:
        """Index a pending recipient in the heap it belongs to (duplicates are harmless)."""
        if rec.status is not _PENDING:
            return
        due = _due_utc(rec)
        if due is None:
            heapq.heappush(index.ready, _ready_key(rec.priority, rec.seq))
        else:
            heapq.heappush(index.waiting, (due, rec.seq))

    def _pending_at(self, index: _CampaignIndex, seq: int) -> Recipient | None:
        """The pending recipient at ``seq``, None if there is none."""
        if not 0 < seq <= len(index.order):
            return None
        rec = self._s.recipient_values.get(index.order[seq - 1])  # (a row is never pending)
        if rec is None or rec.status is not _PENDING or rec.seq != seq:
            return None
        return rec

    def _promote(self, index: _CampaignIndex, now: datetime) -> None:
        """Move waiting entries that are due at ``now`` to the ready heap."""
        waiting = index.waiting
        if waiting and waiting[0][0] <= now:
            # (the pending recipients are values: a row is final)
            ready, order, recipients = index.ready, index.order, self._s.recipient_values
            size = len(order)
            pop, push = heapq.heappop, heapq.heappush
            while waiting and waiting[0][0] <= now:
                due, seq = pop(waiting)
                # the pending recipient at ``seq`` (``_pending_at``), if it is still due
                # at ``due`` (``_due_utc``), gets its ready key (``_ready_key``): inline
                rec = recipients.get(order[seq - 1]) if 0 < seq <= size else None
                if rec is None or rec.status is not _PENDING or rec.seq != seq:
                    continue
                at = rec.next_attempt_at
                if at is not None and at.tzinfo is not UTC:
                    at = _utc(at, "recipient.next_attempt_at")
                if at == due:
                    push(ready, -rec.priority * _SPAN + seq)
        if index.watermark is None or now > index.watermark:
            index.watermark = now

    def due_recipients(self, campaign_id: str, now: datetime, limit: int) -> list[Recipient]:
        """Up to ``limit`` pending recipients due at ``now`` (``next_attempt_at`` None or
        <= now), highest priority first, then insertion order. Claims nothing."""
        s = self._s
        if now.tzinfo is not UTC:
            now = _utc(now, "now")
        index = s.indexes.get(campaign_id)
        if index is None or limit <= 0:
            return []
        waiting = index.waiting
        if (waiting and waiting[0][0] <= now) or index.watermark is None:
            self._promote(index, now)
        elif now > index.watermark:
            index.watermark = now
        ready = index.ready
        pop = heapq.heappop
        recipients, order = s.recipient_values, index.order  # (a row is never pending)
        size = len(order)
        taken: list[int] = []
        found: list[Recipient] = []
        last = None
        # Each entry is looked at on the top of the heap and popped only to go on to the
        # next one: the last recipient found keeps its entry (no pop and push back).
        while ready:
            key = ready[0]
            if key == last:
                pop(ready)
                continue  # a duplicate entry of the recipient just taken
            seq = key % _SPAN
            # the pending recipient at ``seq`` (``_pending_at``) with the entry's priority
            # (its ``_ready_key`` is the key), inline: entries are never removed, so each
            # is checked against the recipient's current state
            rec = recipients.get(order[seq - 1]) if 0 < seq <= size else None
            if rec is None or rec.status is not _PENDING or -rec.priority * _SPAN + rec.seq != key:
                pop(ready)
                continue  # stale entry
            due = rec.next_attempt_at
            if due is not None:
                if due.tzinfo is not UTC:
                    due = _utc(due, "recipient.next_attempt_at")
                if due > now:
                    # Promoted at a later ``now`` than this one: wait again.
                    pop(ready)
                    heapq.heappush(waiting, (due, seq))
                    continue
            found.append(rec)
            if len(found) == limit:
                break
            if limit == 2:
                # A dialer with one free slot asks for two (the usual round). The first
                # one found is the heap's top, so the next entry in key order is the
                # smaller of the top's two children: when that one is due (and not a
                # duplicate entry of the first), it is the second, and nothing is popped
                # and pushed back. Otherwise the general walk below goes on.
                count = len(ready)
                j = 2 if count > 2 and ready[2] < ready[1] else 1
                if j < count and ready[j] != key:
                    child = ready[j]
                    seq = child % _SPAN
                    rec = recipients.get(order[seq - 1]) if 0 < seq <= size else None
                    if (
                        rec is not None
                        and rec.status is _PENDING
                        and -rec.priority * _SPAN + rec.seq == child
                        and (
                            rec.next_attempt_at is None
                            or _utc(rec.next_attempt_at, "recipient.next_attempt_at") <= now
                        )
                    ):
                        found.append(rec)
                        break
            pop(ready)
            taken.append(key)
            last = key
        for key in taken:
            heapq.heappush(ready, key)
        return found

    def next_due_at(self, campaign_id: str, now: datetime) -> datetime | None:
        """The earliest ``next_attempt_at`` later than ``now`` among pending recipients."""
        s = self._s
        if now.tzinfo is not UTC:
            now = _utc(now, "now")
        index = s.indexes.get(campaign_id)
        if index is None:
            return None
        waiting = index.waiting
        if (waiting and waiting[0][0] <= now) or index.watermark is None:
            self._promote(index, now)
        elif now > index.watermark:
            index.watermark = now  # what _promote would do with nothing to move
        while waiting:
            due, seq = waiting[0]
            rec = self._pending_at(index, seq)
            if rec is not None and _due_utc(rec) == due:
                break
            heapq.heappop(waiting)
        best = waiting[0][0] if waiting else None
        if index.watermark is not None and now < index.watermark:
            # Asked about an earlier ``now`` than a previous call: entries due in
            # (now, watermark] already sit in the ready heap. Rare; scan it.
            for key in index.ready:
                rec = self._pending_at(index, key % _SPAN)
                at = None if rec is None else _due_utc(rec)
                if at is not None and at > now and (best is None or at < best):
                    best = at
        return best

    def skip_pending(self, campaign_id: str, reason: str, now: datetime) -> int:
        """Every pending recipient becomes skipped (``error = reason``, ``updated_at =
        now``); counters move. Returns how many. ``NotFound`` for an unknown campaign."""
        s = self._s
        _utc(now, "now")
        index = self._index(campaign_id)
        values = s.recipient_values  # (a row is never pending)
        skipped: list[Recipient] = []
        old_counts = index.counts.copy()
        old_outcomes = dict(index.outcomes)
        for rid in index.order:
            rec = values.get(rid)
            if rec is not None and rec.status is _PENDING:
                s.keep_recipient(
                    replace(rec, status=RecipientStatus.SKIPPED, error=reason, updated_at=now)
                )
                skipped.append(rec)
                self._move_outcome(index, None, rec.outcome)
        if skipped:
            n = len(skipped)
            index.add(_SLOT[_PENDING], -n)
            index.add(_SLOT[RecipientStatus.SKIPPED], n)

        def undo() -> None:
            for rec in skipped:
                s.keep_recipient(rec)
                self._push(index, rec)
            index.restore(old_counts)
            index.outcomes = old_outcomes

        self._journal.append((undo,))
        return len(skipped)

    def outcome_counts(self, campaign_id: str) -> Mapping[CallOutcome, int]:
        """Final recipients by their last outcome (recipients without one are left out)."""
        s = self._s
        index = s.indexes.get(campaign_id)
        if index is None:
            return MappingProxyType({})
        return MappingProxyType({o: n for o, n in index.outcomes.items() if n})

    def duration_totals(self, campaign_id: str) -> tuple[int, float]:
        """(ended, answered, non-test attempts with a duration; their total seconds)."""
        s = self._s
        index = s.indexes.get(campaign_id)
        return (0, 0.0) if index is None else index.durations

    # -- attempts -------------------------------------------------------------------

    def _attach(self, a: Attempt) -> None:
        """Add ``a`` to every attempt index and counter."""
        s = self._s
        # the recipient's latest attempt (the one before it, if any, is its earlier one)
        latest = s.latest_attempt
        earlier = latest.get(a.recipient_id)
        latest[a.recipient_id] = a.id
        if earlier is not None:
            s.earlier_attempt[a.id] = earlier
        if a.provider is not None and a.external_call_id is not None:
            s.own_call(a.provider, a.external_call_id, a.id)
        index = s.indexes.get(a.campaign_id)
        created_at = a.created_at
        if created_at.tzinfo is not UTC:
            created_at = _utc(created_at, "attempt.created_at")
        if a.status is _ENDED:
            s.attempt_rows[a.id] = _attempt_row(a)
        else:  # a.in_flight
            s.attempt_values[a.id] = a
            s.track_start(a.id, created_at)
            s.in_flight_total += 1
            s.in_flight_workspace[a.workspace_id] = s.in_flight_workspace.get(a.workspace_id, 0) + 1
            if not a.test_call:
                s.in_flight_campaign[a.campaign_id] = s.in_flight_campaign.get(a.campaign_id, 0) + 1
        if index is not None and not a.test_call:
            index.counts[_ATTEMPTS] += 1  # index.add(_ATTEMPTS, 1)
            index._frozen = None
            starts = index.starts
            if not starts or starts[-1] <= created_at:
                starts.append(created_at)  # the usual case: attempts start in order
            else:
                bisect.insort(starts, created_at)
            duration = _answered_duration(a) if a.status is _ENDED else None
            if duration is not None:
                count, total = index.durations
                index.durations = (count + 1, total + duration)

    def _detach(self, a: Attempt) -> None:
        """Remove ``a`` from every attempt index and counter (the inverse of ``_attach``)."""
        s = self._s
        if a.status is _ENDED:
            del s.attempt_rows[a.id]
        else:
            del s.attempt_values[a.id]
            s.late_starts.discard(a.id)
        s.unlink_attempt(a.recipient_id, a.id)
        if a.provider is not None and a.external_call_id is not None:
            s.disown_call(a.provider, a.external_call_id, a.id)
        index = s.indexes.get(a.campaign_id)
        if a.in_flight:
            s.in_flight_total -= 1
            _decrement(s.in_flight_workspace, a.workspace_id)
            if not a.test_call:
                _decrement(s.in_flight_campaign, a.campaign_id)
        if index is not None and not a.test_call:
            index.add(_ATTEMPTS, -1)
            pos = bisect.bisect_left(index.starts, _utc(a.created_at, "attempt.created_at"))
            del index.starts[pos]
            duration = _answered_duration(a)
            if duration is not None:
                count, total = index.durations
                index.durations = (count - 1, total - duration) if count > 1 else (0, 0.0)

    def _swap(self, old: Attempt, new: Attempt) -> None:
        """``_detach(old)`` then ``_attach(new)`` for two versions of one attempt that share
        campaign, recipient, workspace, start instant and test flag (every usual update):
        only what can differ between them is touched. The attempt keeps its place among
        its recipient's attempts (in the order they were added, which an update does not
        change; ``attempts_for`` orders them by number anyway), and one in flight before
        and after keeps its place in ``attempt_values`` (the order attached)."""
        s = self._s
        aid = new.id
        was, now = old.status is not _ENDED, new.status is not _ENDED
        if not now:
            s.attempt_rows[aid] = _attempt_row(new)
        new_provider, new_external = new.provider, new.external_call_id
        if new_external is not old.external_call_id or new_provider is not old.provider:
            old_provider, old_external = old.provider, old.external_call_id
            if (
                old_provider is not None
                and old_external is not None
                and (old_provider != new_provider or old_external != new_external)
            ):
                s.disown_call(old_provider, old_external, aid)
            if new_provider is not None and new_external is not None:
                # s.own_call(new_provider, new_external, aid), inline
                calls = s.by_external.get(new_provider)
                if calls is None:
                    calls = s.by_external[new_provider] = {}
                calls[new_external] = aid
        values = s.attempt_values
        if was:
            if now:
                values[aid] = new  # in its place: the order attached
                return  # in flight before and after: no counter moves
            del values[aid]
            if s.late_starts:
                s.late_starts.discard(aid)
            s.in_flight_total -= 1
            _decrement(s.in_flight_workspace, new.workspace_id)
            if not new.test_call:
                _decrement(s.in_flight_campaign, new.campaign_id)
        elif now:
            del s.attempt_rows[aid]
            values[aid] = new  # attached again, at the end (as _attach would)
            s.track_start(aid, _start(new))
            s.in_flight_total += 1
            s.in_flight_workspace[new.workspace_id] = (
                s.in_flight_workspace.get(new.workspace_id, 0) + 1
            )
            if not new.test_call:
                s.in_flight_campaign[new.campaign_id] = (
                    s.in_flight_campaign.get(new.campaign_id, 0) + 1
                )
        if not new.test_call:  # one of the two versions is ended
            index = s.indexes.get(new.campaign_id)
            if index is not None:
                # _answered_duration of each version, inline: neither is a test call, and
                # a version in flight has no duration to count
                old_duration = (
                    None if was or old.outcome is not _ANSWERED_OUTCOME else old.duration_seconds
                )
                new_duration = (
                    None if now or new.outcome is not _ANSWERED_OUTCOME else new.duration_seconds
                )
                if old_duration is not None:
                    count, total = index.durations
                    index.durations = (count - 1, total - old_duration) if count > 1 else (0, 0.0)
                if new_duration is not None:
                    count, total = index.durations
                    index.durations = (count + 1, total + new_duration)

    def _check_external(self, a: Attempt) -> None:
        if a.provider is not None and a.external_call_id is not None:
            owner = self._s.by_external.get(a.provider, _NO_CALLS).get(a.external_call_id)
            if owner is not None and owner != a.id:
                raise RepositoryError(
                    f"attempt {a.id!r}: {a.provider} call {a.external_call_id!r} "
                    f"already belongs to attempt {owner!r}"
                )

    def add_attempt(self, attempt: Attempt) -> None:
        """Record a new attempt; a non-test attempt counts in its campaign's ``attempts``.

        ``RepositoryError`` if the id (or the provider's call id) is taken;
        ``NotFound`` if a non-test attempt's campaign does not exist.
        """
        s = self._s
        if attempt.created_at.tzinfo is not UTC:
            _utc(attempt.created_at, "attempt.created_at")
        if attempt.id in s.attempt_values or attempt.id in s.attempt_rows:
            raise RepositoryError(f"attempt {attempt.id!r} already exists")
        if not attempt.test_call and attempt.campaign_id not in s.indexes:
            raise NotFound("campaign", attempt.campaign_id)
        if attempt.external_call_id is not None:
            self._check_external(attempt)
        self._attach(attempt)
        self._journal.append((_detach, self, attempt))

    def add_claims(self, claims: Sequence[tuple[Attempt, Recipient, Recipient]]) -> None:
        """``add_attempt(attempt); save_recipient(recipient, previous)`` for each claim, in
        order; on an error, what the batch already stored is undone before it propagates."""
        journal = self._journal
        mark = len(journal)
        try:
            for attempt, recipient, previous in claims:
                self.add_attempt(attempt)
                self.save_recipient(recipient, previous)
        except BaseException:
            _undo_to(journal, mark)
            raise

    def get_attempt(self, attempt_id: str) -> Attempt | None:
        """The attempt; None if there is none. An ended attempt is a new, equal value on
        each read (the store keeps it as a row)."""
        s = self._s
        a = s.attempt_values.get(attempt_id)
        if a is None:  # ended (a row) or unknown: ``s.attempt``, inline
            row = s.attempt_rows.get(attempt_id)
            return None if row is None else _attempt_of(row)
        return a

    def find_attempt(self, provider: str, external_call_id: str) -> Attempt | None:
        """The attempt the provider knows as ``external_call_id``; None if none."""
        s = self._s
        attempt_id = s.by_external.get(provider, _NO_CALLS).get(external_call_id)
        return None if attempt_id is None else s.attempt(attempt_id)

    def save_attempt(self, attempt: Attempt) -> None:
        """Update an attempt.

        Fencing: ``StaleClaim`` when the stored ``claim_token`` is greater than
        ``attempt.claim_token`` (a newer claim owns the attempt). An equal token
        is the owner writing; a greater one takes the attempt over, after which
        writes with the old token are refused. ``NotFound`` if it does not exist.
        """
        s = self._s
        stored = s.attempt_values.get(attempt.id)
        if stored is None:  # ended (a row) or unknown: ``s.attempt``, inline
            row = s.attempt_rows.get(attempt.id)
            if row is None:
                raise NotFound("attempt", attempt.id)
            stored = _attempt_of(row)
        if stored.claim_token > attempt.claim_token:
            raise StaleClaim(attempt.id, attempt.claim_token)
        if (
            attempt.campaign_id == stored.campaign_id
            and attempt.recipient_id == stored.recipient_id
            and attempt.workspace_id == stored.workspace_id
            and attempt.test_call == stored.test_call
            and attempt.created_at == stored.created_at  # (a naive one is never equal)
        ):
            # Every usual update: its campaign exists and its start was checked when the
            # stored version was, and a call id the stored version has is its own.
            external = attempt.external_call_id
            if external is not None and (
                external is not stored.external_call_id or attempt.provider is not stored.provider
            ):
                # self._check_external(attempt), inline up to its error: a new call id
                # (a call id without a provider is never indexed, so it has no owner)
                provider = attempt.provider
                owner = (
                    None
                    if provider is None
                    else s.by_external.get(provider, _NO_CALLS).get(external)
                )
                if owner is not None and owner != attempt.id:
                    self._check_external(attempt)  # raises
            self._swap(stored, attempt)
            self._journal.append((_swap, self, attempt, stored))
            return
        created_at = attempt.created_at
        if created_at.tzinfo is not UTC:
            _utc(created_at, "attempt.created_at")
        if not attempt.test_call and attempt.campaign_id not in s.indexes:
            raise NotFound("campaign", attempt.campaign_id)
        if attempt.external_call_id is not None:
            self._check_external(attempt)
        self._detach(stored)
        self._attach(attempt)

        def undo() -> None:
            self._detach(attempt)
            self._attach(stored)

        self._journal.append((undo,))

    def attempts_for(self, recipient_id: str) -> list[Attempt]:
        """The recipient's attempts by number (then creation)."""
        s = self._s
        values, rows, earlier = s.attempt_values, s.attempt_rows, s.earlier_attempt
        found: list[Attempt] = []
        # Attempts are usually added in number order, each number once: then the walk
        # (newest first) meets decreasing numbers, and nothing needs sorting.
        in_order = True
        number: int | None = None  # the number of the attempt met before
        # each of ``s.attempt_ids(recipient_id)`` read with ``s.attempt``, inline
        attempt_id = s.latest_attempt.get(recipient_id)
        while attempt_id is not None:
            a = values.get(attempt_id)
            if a is None:
                a = _attempt_of(rows[attempt_id])
            if number is not None and a.number >= number:
                in_order = False
            number = a.number
            found.append(a)
            attempt_id = earlier.get(attempt_id)
        found.reverse()
        if not in_order:
            found.sort(key=lambda a: (a.number, _utc(a.created_at, "")))
        return found

    def attempt_starts(
        self, recipient_ids: Iterable[str], since: datetime
    ) -> Mapping[str, list[datetime]]:
        """For every id asked, the sorted ``created_at`` (>= since) of its non-test
        attempts (an empty list when it has none)."""
        s = self._s
        since = _utc(since, "since")
        starts: dict[str, list[datetime]] = {}
        for rid in recipient_ids:
            found = (
                _utc(a.created_at, "")
                for a in map(s.attempt, s.attempt_ids(rid))
                if not a.test_call
            )
            starts[rid] = sorted(t for t in found if t >= since)
        return starts

    def in_flight(self) -> InFlightCounts:
        """Attempts not ended: by campaign (test calls excluded), by workspace and in
        total (test calls included: they use the provider's capacity)."""
        s = self._s
        seen = s.in_flight_seen
        if (
            seen.total == s.in_flight_total
            and seen.by_campaign == s.in_flight_campaign
            and seen.by_workspace == s.in_flight_workspace
        ):
            return seen  # a call ended and the next one started since: the same counts
        # The dicts never hold a zero (``_decrement`` drops the key), and the copier skips
        # the converter that would copy them a second time.
        seen = s.in_flight_seen = _in_flight_counts(
            _NO_IN_FLIGHT,
            MappingProxyType(dict(s.in_flight_campaign)),
            MappingProxyType(dict(s.in_flight_workspace)),
            s.in_flight_total,
        )
        return seen

    def dial_stats(self, campaign_id: str, now: datetime, day_start: datetime) -> DialStats:
        """Non-test attempt starts of the campaign: those in ``(now - 60 s, now]``, the
        latest one at or before ``now`` and how many in ``[day_start, now]``."""
        s = self._s
        now = _utc(now, "now")
        day_start = _utc(day_start, "day_start")
        index = s.indexes.get(campaign_id)
        if index is None:
            return DialStats()
        starts = index.starts
        end = bisect.bisect_right(starts, now)
        minute = bisect.bisect_right(starts, now - _MINUTE, 0, end)
        day = bisect.bisect_left(starts, day_start, 0, end)
        return DialStats(
            starts_since_minute=tuple(starts[minute:end]),
            last_start_at=starts[end - 1] if end else None,
            starts_today=end - day,
        )

    def unfinished_attempts(self, *, started_before: datetime) -> list[Attempt]:
        """Attempts not ended (test calls too) created before ``started_before``, oldest
        first."""
        s = self._s
        started_before = _utc(started_before, "started_before")
        if s.late_starts:  # some were attached out of start order: look at every one
            found = [a for a in s.attempt_values.values() if _start(a) < started_before]
            found.sort(key=_start)
            return found
        # in the order attached, which is the order of their starts: up to the first one
        # that started too late (``_start``, inline)
        found = []
        for a in s.attempt_values.values():
            at = a.created_at
            if at.tzinfo is not UTC:
                at = _utc(at, "attempt.created_at")
            if at >= started_before:
                break
            found.append(a)
        return found

    # -- suppression ------------------------------------------------------------------

    def suppress(self, workspace_id: str, phone: str, reason: str, now: datetime) -> None:
        """Put ``phone`` on the workspace's do-not-call list (a second time changes
        nothing: the first reason and time are kept)."""
        s = self._s
        _utc(now, "now")
        listed = s.suppressions.setdefault(workspace_id, {})
        if phone in listed:
            return
        listed[phone] = (reason, now)

        def undo() -> None:
            del listed[phone]

        self._journal.append((undo,))

    def unsuppress(self, workspace_id: str, phone: str) -> None:
        """Take ``phone`` off the workspace's list (nothing happens if it is not on it)."""
        s = self._s
        listed = s.suppressions.get(workspace_id)
        if listed is None or phone not in listed:
            return
        entry = listed.pop(phone)

        def undo() -> None:
            listed[phone] = entry

        self._journal.append((undo,))

    def suppressed(self, workspace_id: str, phones: Iterable[str]) -> set[str]:
        """The ``phones`` that are on the workspace's do-not-call list."""
        s = self._s
        listed = s.suppressions.get(workspace_id)
        if not listed:
            return set()
        return {p for p in phones if p in listed}


#: undo steps are ``(function, uow, ...)``, the function one of these methods: one tuple
#: each (no bound method)
_unsave_recipient = InMemoryUnitOfWork._unsave_recipient
_swap = InMemoryUnitOfWork._swap
_detach = InMemoryUnitOfWork._detach
#: a unit of work with no slot set yet (see ``_Transaction.__enter__``)
_new_unit_of_work = object.__new__


def _undo_to(journal: list[_Undo], mark: int) -> None:
    """Run the undo steps recorded after the first ``mark`` ones, newest first."""
    while len(journal) > mark:
        undo, *args = journal.pop()
        undo(*args)


def _decrement(counts: dict[str, int], key: str) -> None:
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]


def _matches(rec: Recipient, needle: str) -> bool:
    return any(
        value is not None and needle in value.casefold()
        for value in (rec.phone, rec.first_name, rec.last_name, rec.email)
    )


class InMemoryRepository:
    """A :class:`~outdial.ports.Repository` in process memory (tests, simulations).

    >>> repo = InMemoryRepository()
    >>> with repo.transaction() as uow:
    ...     uow.suppressed("ws", ["+12125550123"])
    set()

    One lock serialises transactions (so ``dispatch_lock`` is always implied);
    an exception inside a ``transaction()`` block undoes every change it made.
    """

    blocking = False  # no I/O: async runners may call it directly

    def __init__(self) -> None:
        self._store = _Store()
        self._transaction = _Transaction(self._store, threading.RLock())

    def transaction(self, *, dispatch_lock: bool = False) -> _Transaction:
        """Open a unit of work; commit when the block exits, roll back on an exception.

        ``dispatch_lock`` is accepted for the port's sake: every in-memory
        transaction already holds the repository's only lock. A nested block on
        the same thread is a savepoint of the outer block: it gives the outer
        block's unit of work (as the SQL adapter does), and its exception undoes
        only the changes made inside it.
        """
        return self._transaction


class _Transaction:
    """The context manager :meth:`InMemoryRepository.transaction` returns: one per
    repository, made once (it is entered on every step of a run, so none is made per use).

    What it keeps from ``__enter__`` to ``__exit__`` (the open unit of work, where each
    open savepoint began) is read and changed only with the lock held, so the blocks
    of several threads share it safely; blocks on one thread nest, so the savepoints
    end in the reverse order they began.
    """

    __slots__ = ("_lock", "_marks", "_store", "_uow")

    def __init__(self, store: _Store, lock: threading.RLock) -> None:
        self._store = store
        self._lock = lock
        self._uow: InMemoryUnitOfWork | None = None  # the open outermost block's
        self._marks: list[int] = []  # journal lengths where the open savepoints began

    def __enter__(self) -> InMemoryUnitOfWork:
        self._lock.acquire()
        uow = self._uow
        if uow is None:  # the outermost block (the lock is this thread's alone)
            # InMemoryUnitOfWork(self._store, []) without the class call, which runs
            # ``__init__`` from C (the interpreter's slower call path): its two slots set
            uow = self._uow = _new_unit_of_work(InMemoryUnitOfWork)
            uow._s = self._store
            uow._journal = []
        else:  # a savepoint: undo down to this mark on an exception
            self._marks.append(len(uow._journal))
        return uow

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        uow = self._uow
        assert uow is not None  # entered: the lock is held
        marks = self._marks
        if marks:  # a savepoint ends
            try:
                if exc_type is not None:
                    _undo_to(uow._journal, marks[-1])
            finally:
                marks.pop()
                self._lock.release()
            return
        try:
            if exc_type is not None:
                _undo_to(uow._journal, 0)
        finally:
            uow._s = _CLOSED
            self._uow = None
            # the undo steps refer to the unit of work, which refers to the journal:
            # empty it so all of them are freed now, not by a later garbage collection
            uow._journal.clear()
            self._lock.release()


if TYPE_CHECKING:
    from outdial.ports import Repository, UnitOfWork

    _repository_check: Repository = InMemoryRepository()
    _unit_of_work_check: UnitOfWork = InMemoryUnitOfWork(_Store(), [])

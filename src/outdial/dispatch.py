"""The application layer between the engine and the ports.

:class:`DialerCore` runs one engine step inside one repository transaction:
load the facts, ask the engine, store the decisions, and only after the commit
emit events. The sync :class:`~outdial.dialer.Dialer`, the asyncio
:class:`~outdial.aio.AsyncDialer` and :class:`~outdial.service.CampaignService`
all go through it, so each rule lives in one place. Provider I/O never
happens inside a transaction: claims are committed (the attempt is recorded)
before any provider is asked to dial, which is what makes dialling
at-most-once across crashes.
"""

from __future__ import annotations

import os
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

import attrs

from outdial._attrs import copier, maker, replace
from outdial.campaign import AgentSettings, Campaign, CampaignAction, CampaignStatus
from outdial.engine import (
    CampaignSnapshot,
    Effect,
    Engine,
    Plan,
    ResultDecision,
    Snapshot,
)
from outdial.errors import NotFound, ProviderError
from outdial.events import (
    CallEnded,
    CallPlaced,
    CampaignStatusChanged,
    DomainEvent,
    ProgressUpdated,
    RecipientSkipped,
    RetryScheduled,
)
from outdial.phone import mask_phone
from outdial.ports import (
    CallEvent,
    DialRequest,
    DialStats,
    EventSink,
    PlacedCall,
    Repository,
    UnitOfWork,
)
from outdial.recipient import (
    RECIPIENT_TRANSITIONS,
    Attempt,
    AttemptStatus,
    Recipient,
    RecipientStatus,
    check_move,
)
from outdial.retry import RandomSource
from outdial.templates import render

__all__ = ["Claim", "DialerCore", "EventResult", "Placement", "build_dial_request"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


#: attempt ids made ahead, from one ``os.urandom`` read per :data:`_IDS_PER_READ` ids
#: (a read is a system call: about as slow as everything else a claim does). Taken
#: with ``deque.popleft``, which is atomic, so two threads never get the same id; a
#: forked child starts with none (its parent holds the same ones).
_IDS: deque[str] = deque()
_IDS_PER_READ = 256
# what uuid.UUID(bytes=..., version=4) does to bytes 6 and 8, as translation tables
_VERSION_4 = bytes(b & 0x0F | 0x40 for b in range(256))
_RFC_4122_VARIANT = bytes(b & 0x3F | 0x80 for b in range(256))
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_IDS.clear)


def _read_ids() -> None:
    """Add :data:`_IDS_PER_READ` ids to the pool: each is ``uuid.uuid4().hex`` of its
    own 16 bytes (the same 122 random bits from ``os.urandom``)."""
    raw = bytearray(os.urandom(16 * _IDS_PER_READ))
    raw[6::16] = raw[6::16].translate(_VERSION_4)  # byte 6 of each id
    raw[8::16] = raw[8::16].translate(_RFC_4122_VARIANT)  # byte 8 of each id
    _IDS.extend(raw.hex(" ", 16).split(" "))  # 32 hex digits per id


def _uuid4_hex() -> str:
    """A new attempt id: ``uuid.uuid4().hex`` (see :func:`_read_ids`), without building
    a ``UUID`` object, a 128-bit integer or a system call per id."""
    while True:
        try:
            return _IDS.popleft()
        except IndexError:  # empty (or emptied by other threads meanwhile): read more
            _read_ids()


_NO_STATS = DialStats()
_NONE: Mapping[str, Sequence[datetime]] = MappingProxyType({})
_NO_ONE: frozenset[str] = frozenset()
_ACTIVE = CampaignStatus.ACTIVE
# snapshots built without __init__ (their fields are already the right types)
_NO_SNAPSHOT = CampaignSnapshot(Campaign("", "", _EPOCH))
_NO_SNAPSHOTS = Snapshot(())
_campaign_snapshot = copier(
    CampaignSnapshot,
    "campaign",
    "dial_stats",
    "candidates",
    "candidates_truncated",
    "attempt_starts",
    "suppressed",
    "next_due_at",
    "counters",
    "capacity",
)
_snapshot = copier(Snapshot, "campaigns", "in_flight")
_NO_REQUEST = DialRequest("", "", "", "", "", AgentSettings())
_dial_request = copier(
    DialRequest,
    "attempt_id",
    "campaign_id",
    "workspace_id",
    "recipient_id",
    "to",
    "agent",
    "attempt_number",
    "caller_id",
    "variables",
    "prompt",
    "greeting",
    "test_call",
)

# a claim's new attempt and queued recipient, copied with only what differs (no __init__)
_NO_ATTEMPT = Attempt("", "", "", "", 0, "", _EPOCH)
_new_attempt = copier(
    Attempt,
    "id",
    "campaign_id",
    "recipient_id",
    "workspace_id",
    "number",
    "phone",
    "created_at",
    "provider",
    "worker_id",
)
_queued_recipient = copier(
    Recipient, "status", "attempts", "last_attempt_at", "next_attempt_at", "updated_at"
)
_QUEUED = RecipientStatus.QUEUED
_ENDED = AttemptStatus.ENDED


@attrs.frozen
class Claim:
    """A committed claim: the attempt is recorded; the call may now be placed."""

    attempt: Attempt
    request: DialRequest
    provider: str | None


# one per dial (see outdial._attrs.maker): every field given
_new_claim = maker(Claim, "attempt", "request", "provider")

#: A call a provider accepted: when, for which claim, and the provider's answer.
Placement = tuple[datetime, Claim, PlacedCall]


@attrs.frozen
class EventResult:
    """What applying one provider event did."""

    effect: Effect | None  # None: no attempt matches the event
    attempt_id: str | None = None
    recipient_status: RecipientStatus | None = None
    reason: str | None = None
    freed: bool = False  # the attempt ended: its slot is free for the next call


def build_dial_request(campaign: Campaign, recipient: Recipient, attempt: Attempt) -> DialRequest:
    """The provider request for one attempt, with the recipient's variables rendered."""
    variables = recipient.template_variables()
    if campaign.prompt_variables:
        merged = dict(campaign.prompt_variables)
        merged.update(variables)
        variables = merged
    agent = campaign.agent
    # the copier skips the converter, which would copy ``variables`` a second time
    return _dial_request(
        _NO_REQUEST,
        attempt.id,
        campaign.id,
        campaign.workspace_id,
        recipient.id,
        recipient.phone,
        agent,
        attempt.number,
        agent.phone_number,
        MappingProxyType(variables),
        render(agent.prompt_template, variables) if agent.prompt_template else None,
        render(agent.greeting_template, variables) if agent.greeting_template else None,
        attempt.test_call,
    )


#: ``EventResult(effect, attempt_id, recipient_status, reason, freed)``, one per event,
#: without ``__init__``'s per-field writes (see outdial._attrs.maker)
_event_result = maker(EventResult, "effect", "attempt_id", "recipient_status", "reason", "freed")


class DialerCore:
    """Engine steps as repository transactions. Shared by runners and the service."""

    def __init__(
        self,
        repository: Repository,
        engine: Engine | None = None,
        *,
        events: EventSink | None = None,
        worker_id: str | None = None,
        rng: RandomSource | None = None,
        new_id: Callable[[], str] | None = None,
    ) -> None:
        self.repository = repository
        self.engine = engine or Engine()
        self.events = events
        self.worker_id = worker_id or f"worker-{uuid.uuid4().hex[:12]}"
        self.rng = rng
        self.new_id = new_id or _uuid4_hex

    # -- dispatch ------------------------------------------------

    def dispatch(self, now: datetime) -> tuple[list[Claim], Plan]:
        """One dispatch round: plan at ``now`` and commit the claims."""
        out: list[DomainEvent] = []
        with self.repository.transaction(dispatch_lock=True) as uow:
            claims, plan = self._dispatch(uow, now, out)
        self._emit(out)
        return claims, plan

    def _dispatch(
        self, uow: UnitOfWork, now: datetime, out: list[DomainEvent]
    ) -> tuple[list[Claim], Plan]:
        plan = self.engine.plan(now, self.load_snapshot(uow, now))
        return self.apply_plan(uow, plan, now, out), plan

    def load_snapshot(self, uow: UnitOfWork, now: datetime) -> Snapshot:
        engine = self.engine
        in_flight = uow.in_flight()
        by_campaign = in_flight.by_campaign
        shots: list[CampaignSnapshot] = []
        campaigns = uow.dispatchable_campaigns()
        shared = len(campaigns) > 1  # fairness between campaigns needs their last starts
        for c, counters in campaigns:
            dialing = (
                c.status is _ACTIVE
                and counters.pending + counters.queued + counters.calling > 0
                and (c.expires_at is None or c.expires_at > now)
            )
            if not dialing:
                shots.append(
                    _campaign_snapshot(
                        _NO_SNAPSHOT, c, _NO_STATS, (), False, _NONE, _NO_ONE, None, counters, None
                    )
                )
                continue
            stats = (
                uow.dial_stats(c.id, now, engine.day_start(c, now))
                if shared or engine.needs_dial_stats(c)
                else _NO_STATS
            )
            sized = engine.campaign_capacity(c, by_campaign.get(c.id, 0), stats, now)
            capacity = sized[0]
            want = engine.candidates_wanted(c, capacity)
            candidates = uow.due_recipients(c.id, now, want) if want else []
            starts: Mapping[str, Sequence[datetime]] = _NONE
            suppressed: frozenset[str] = _NO_ONE
            if candidates:
                if engine.needs_attempt_starts(c):
                    retried = [r.id for r in candidates if r.attempts > 0]
                    if retried:
                        starts = uow.attempt_starts(retried, _EPOCH)
                phones = []  # a loop: cheaper than a list comprehension for a round's few
                for r in candidates:
                    phones.append(r.phone)
                found = uow.suppressed(c.workspace_id, phones)
                if found:
                    suppressed = frozenset(found)
            shots.append(
                _campaign_snapshot(
                    _NO_SNAPSHOT,
                    c,
                    stats,
                    tuple(candidates),
                    bool(want) and len(candidates) >= want,
                    starts,
                    suppressed,
                    uow.next_due_at(c.id, now)
                    if engine.needs_next_due(c, capacity, len(candidates), want)
                    else None,
                    counters,
                    sized,  # the plan at this instant uses it as it is
                )
            )
        return _snapshot(_NO_SNAPSHOTS, tuple(shots), in_flight)

    def apply_plan(
        self, uow: UnitOfWork, plan: Plan, now: datetime, out: list[DomainEvent]
    ) -> list[Claim]:
        for t in plan.transitions:
            self.transition(uow, t.campaign_id, t.action, now, out, reason=t.reason)
        for skip in plan.skips:
            r = skip.recipient
            uow.save_recipient(
                r.moved_to(RecipientStatus.SKIPPED, error=skip.reason, updated_at=now), r
            )
            if self.events is not None:
                out.append(RecipientSkipped(r.campaign_id, r.workspace_id, r.id, skip.reason, now))
        for defer in plan.defers:
            r = defer.recipient
            uow.save_recipient(replace(r, next_attempt_at=defer.until, updated_at=now), r)
        claims: list[Claim] = []
        stored: list[tuple[Attempt, Recipient, Recipient]] = []
        campaigns: dict[str, Campaign] = {}
        for dial in plan.dials:
            campaign = campaigns.get(dial.campaign_id)
            if campaign is None:
                campaign = campaigns[dial.campaign_id] = uow.get_campaign_settings(dial.campaign_id)
            r = dial.recipient
            attempt = _new_attempt(
                _NO_ATTEMPT,
                self.new_id(),
                campaign.id,
                r.id,
                campaign.workspace_id,
                dial.attempt_number,
                r.phone,
                now,
                campaign.agent.provider,
                self.worker_id,
            )
            if (r.status, _QUEUED) not in RECIPIENT_TRANSITIONS:
                check_move(r, _QUEUED)  # raises InvalidTransition
            queued = _queued_recipient(r, _QUEUED, dial.attempt_number, now, None, now)
            stored.append((attempt, queued, r))
            claims.append(
                _new_claim(attempt, build_dial_request(campaign, queued, attempt), attempt.provider)
            )
        if stored:
            uow.add_claims(stored)  # the round's attempts and queued recipients at once
        if self.events is not None and (plan.skips or plan.dials):
            for cid in sorted(
                {s.recipient.campaign_id for s in plan.skips} | {d.campaign_id for d in plan.dials}
            ):
                self._progress(uow, cid, now, out)
        return claims

    def transition(
        self,
        uow: UnitOfWork,
        campaign_id: str,
        action: CampaignAction,
        now: datetime,
        out: list[DomainEvent],
        *,
        reason: str | None = None,
        workspace_id: str | None = None,
    ) -> Campaign:
        """Move a campaign through the state machine; terminate/expire skip pending."""
        campaign = uow.get_campaign(campaign_id, workspace_id)
        new = campaign.apply(action, now, reason)
        stored = uow.save_campaign(new)
        out.append(
            CampaignStatusChanged(
                campaign.id, campaign.workspace_id, campaign.status, new.status, now, reason
            )
        )
        if action in (CampaignAction.TERMINATE, CampaignAction.EXPIRE):
            why = "campaign expired" if action is CampaignAction.EXPIRE else "campaign terminated"
            if uow.skip_pending(campaign.id, why, now):
                stored = uow.get_campaign(campaign.id)
                out.append(ProgressUpdated(stored.id, stored.workspace_id, stored.counters, now))
        return stored

    # -- results ------------------------------------------------

    def record_placed(self, now: datetime, claim: Claim, placed: PlacedCall) -> None:
        """Record that the provider accepted ``claim``'s call at ``now``."""
        out: list[DomainEvent] = []
        with self.repository.transaction() as uow:
            self._record_placed(uow, now, claim, placed, out)
        self._emit(out)

    def record_placements(self, placements: Sequence[Placement]) -> None:
        """:meth:`record_placed` for several calls (each at its own instant, in order)
        in one transaction: what a runner does with the calls of one dispatch round.

        If that transaction fails, each call is recorded in a transaction of its own
        (so one bad record does not hold back the others) and the first error is
        raised once they all were tried.
        """
        if not placements:
            return
        out: list[DomainEvent] = []
        try:
            with self.repository.transaction() as uow:
                for now, claim, placed in placements:
                    self._record_placed(uow, now, claim, placed, out)
        except Exception:
            if len(placements) == 1:
                raise
            first: Exception | None = None
            for now, claim, placed in placements:
                try:
                    self.record_placed(now, claim, placed)
                except Exception as exc:
                    first = first or exc
            if first is not None:
                raise first from None
            return
        self._emit(out)

    def _record_placed(
        self,
        uow: UnitOfWork,
        now: datetime,
        claim: Claim,
        placed: PlacedCall,
        out: list[DomainEvent],
    ) -> None:
        attempt = uow.get_attempt(claim.attempt.id)
        if attempt is None:
            return
        recipient = None if attempt.test_call else uow.get_recipient(attempt.recipient_id)
        decision = self.engine.on_placed(now, attempt, recipient, placed)
        self._store(uow, decision, recipient, now, out)
        if self.events is not None:
            out.append(
                CallPlaced(
                    attempt.campaign_id,
                    attempt.workspace_id,
                    attempt.recipient_id,
                    attempt.id,
                    attempt.number,
                    mask_phone(attempt.phone),
                    placed.provider,
                    now,
                    attempt.test_call,
                )
            )

    def record_dial_error(
        self, now: datetime, claim: Claim, error: ProviderError
    ) -> ResultDecision:
        out: list[DomainEvent] = []
        with self.repository.transaction() as uow:
            attempt = uow.get_attempt(claim.attempt.id)
            if attempt is None:
                return ResultDecision(Effect.DUPLICATE, reason="attempt not found")
            campaign = uow.get_campaign_settings(attempt.campaign_id)
            recipient = None if attempt.test_call else uow.get_recipient(attempt.recipient_id)
            history = uow.attempts_for(attempt.recipient_id) if recipient is not None else []
            decision = self.engine.on_dial_error(
                now, campaign, attempt, recipient, error, history, self.rng
            )
            self._store(uow, decision, recipient, now, out)
        self._emit(out)
        return decision

    def apply_event(self, now: datetime, event: CallEvent) -> EventResult:
        """Apply a provider event (webhook, status fetch, simulator) exactly once."""
        out: list[DomainEvent] = []
        with self.repository.transaction() as uow:
            result = self._apply(uow, now, event, out)
        self._emit(out)
        return result

    def _apply(
        self, uow: UnitOfWork, now: datetime, event: CallEvent, out: list[DomainEvent]
    ) -> EventResult:
        """Apply ``event`` inside ``uow``: find its attempt, decide with the engine, store."""
        attempt = uow.get_attempt(event.attempt_id) if event.attempt_id else None
        if attempt is None and event.external_call_id:
            attempt = uow.find_attempt(event.provider, event.external_call_id)
        if attempt is None:
            return EventResult(None, reason="no attempt matches this call")
        campaign = uow.get_campaign_settings(attempt.campaign_id)
        recipient = None if attempt.test_call else uow.get_recipient(attempt.recipient_id)
        engine = self.engine
        history: Sequence[Attempt] = (
            uow.attempts_for(attempt.recipient_id)
            if recipient is not None and engine.needs_history(campaign, event)
            else ()
        )
        decision = engine.on_event(now, campaign, attempt, recipient, event, history, self.rng)
        self._store(uow, decision, recipient, now, out)
        new_recipient, new_attempt = decision.recipient, decision.attempt
        return _event_result(
            decision.effect,
            attempt.id,
            None if new_recipient is None else new_recipient.status,
            decision.reason,
            new_attempt is not None and new_attempt.status is _ENDED,
        )

    def apply_events(
        self, now: datetime, events: Sequence[CallEvent]
    ) -> list[EventResult | Exception]:
        """Apply ``events`` in order in one transaction: one commit for all of them.

        Each event is applied exactly as :meth:`apply_event` would apply it, one
        after the other (a second event for the same attempt sees what the first
        one stored), and the domain events are emitted in order after the commit.
        If any event raises (:class:`~outdial.errors.StaleClaim`,
        :class:`~outdial.errors.NotFound`, a database error...), the whole
        transaction is rolled back and every event is applied again on its own
        with :meth:`apply_event`, so one bad event neither blocks nor loses the
        others. Returns one item per event, in order: its :class:`EventResult`,
        or the exception its own :meth:`apply_event` raised (returned, not raised).
        This is the group commit behind :class:`~outdial.group_commit.EventApplier`.
        """
        if len(events) > 1:
            out: list[DomainEvent] = []
            results: list[EventResult | Exception] = []
            try:
                with self.repository.transaction() as uow:
                    results.extend(self._apply(uow, now, event, out) for event in events)
            except Exception:  # rolled back: each event on its own below
                results = []
            if results:
                self._emit(out)
                return results
        one_by_one: list[EventResult | Exception] = []
        for event in events:
            try:
                one_by_one.append(self.apply_event(now, event))
            except Exception as exc:
                one_by_one.append(exc)
        return one_by_one

    def apply_event_and_dispatch(
        self,
        now: datetime,
        event: CallEvent,
        *,
        dispatch: bool = False,
        placed: list[Placement] | None = None,
    ) -> tuple[EventResult, tuple[list[Claim], Plan] | None]:
        """:meth:`apply_event`, then, when the event ended a call (its slot is free) or
        ``dispatch`` is true, :meth:`dispatch` at the same ``now``: one transaction
        instead of two.

        This is what a runner does with the last event due at an instant, so it
        saves a commit per call. The claims are committed when this returns,
        before any provider is asked to dial. If the dispatch raises, the event
        stays applied and the error is raised after the commit, as with the two
        calls: the transaction (event and dispatch) is rolled back and the event
        applied again, decided anew (a jittered retry delay is drawn again), in a
        transaction of its own (a failed dispatch is rare; a savepoint around
        every dispatch would cost each call more).
        ``placed`` are calls placed since the last transaction, recorded first
        (:meth:`record_placements`) in the same transaction, so the records come
        before the event as they happened; the list is emptied once they are
        committed (also when the dispatch then fails), and left as it was when
        nothing was committed.
        Returns the event's result and, when a dispatch ran, its claims and plan.
        """
        out: list[DomainEvent] = []
        dispatched: tuple[list[Claim], Plan] | None = None
        error: BaseException | None = None
        dispatching = False  # True while the dispatch runs (its error is not the event's)
        try:
            with self.repository.transaction(dispatch_lock=True) as uow:
                if placed:
                    for at, claim, call in placed:
                        self._record_placed(uow, at, claim, call, out)
                result = self._apply(uow, now, event, out)
                if dispatch or result.freed:
                    dispatching = True
                    # self._dispatch(uow, now, out), inline (once per call)
                    plan = self.engine.plan(now, self.load_snapshot(uow, now))
                    dispatched = self.apply_plan(uow, plan, now, out), plan
                    dispatching = False
        except BaseException as exc:
            if not dispatching:
                raise  # the records or the event failed (or the commit): nothing is stored
            # everything was rolled back: the records and the event again, without the
            # dispatch (an error here is raised instead, and nothing is stored)
            error = exc
            out = []
            with self.repository.transaction() as uow:
                if placed:
                    for at, claim, call in placed:
                        self._record_placed(uow, at, claim, call, out)
                result = self._apply(uow, now, event, out)
        if placed:
            placed.clear()  # committed with the event
        if self.events is not None:  # self._emit(out), without the call when there is no sink
            self._emit(out)
        if error is not None:
            raise error
        return result, dispatched

    def unfinished(self, now: datetime, *, own_only: bool = False) -> list[Attempt]:
        """Attempts to reconcile now: old enough (or this worker's own after a restart)."""
        engine = self.engine
        if own_only:
            with self.repository.transaction() as uow:
                attempts = uow.unfinished_attempts(started_before=now)
            return [
                a
                for a in attempts
                if a.worker_id == self.worker_id or engine.needs_reconcile(a, now)
            ]
        # only those old enough to need one: created at ``now - reconcile_age`` or before
        # (the repository's bound is strict, hence a microsecond later; never after ``now``)
        started_before = now
        age = engine.reconcile_age()
        if age > _MICROSECOND:
            try:
                started_before = now - (age - _MICROSECOND)
            except OverflowError:  # before the first instant there is: none is that old
                return []
        with self.repository.transaction() as uow:
            attempts = uow.unfinished_attempts(started_before=started_before)
        return [a for a in attempts if engine.needs_reconcile(a, now)]

    def record_reconcile(
        self, now: datetime, attempt_id: str, view: CallEvent | ProviderError | None
    ) -> ResultDecision:
        out: list[DomainEvent] = []
        with self.repository.transaction() as uow:
            attempt = uow.get_attempt(attempt_id)
            if attempt is None:
                return ResultDecision(Effect.DUPLICATE, reason="attempt not found")
            campaign = uow.get_campaign_settings(attempt.campaign_id)
            recipient = None if attempt.test_call else uow.get_recipient(attempt.recipient_id)
            history = uow.attempts_for(attempt.recipient_id) if recipient is not None else []
            # Taking over someone else's attempt bumps the fencing token, so the worker
            # that lost it can no longer write it.
            if attempt.worker_id != self.worker_id:
                taken = replace(
                    attempt, worker_id=self.worker_id, claim_token=attempt.claim_token + 1
                )
                uow.save_attempt(taken)
                attempt = taken
            decision = self.engine.on_reconcile(
                now, campaign, attempt, recipient, view, history, self.rng
            )
            self._store(uow, decision, recipient, now, out)
        self._emit(out)
        return decision

    # -- storage ------------------------------------------------

    def _store(
        self,
        uow: UnitOfWork,
        decision: ResultDecision,
        recipient: Recipient | None,
        now: datetime,
        out: list[DomainEvent],
    ) -> None:
        attempt, new_recipient = decision.attempt, decision.recipient
        if attempt is not None:
            uow.save_attempt(attempt)  # StaleClaim if a newer claim owns it: nothing is stored
        if new_recipient is not None and recipient is not None:
            uow.save_recipient(new_recipient, recipient)
        if decision.suppress_phone is not None and attempt is not None:
            uow.suppress(attempt.workspace_id, decision.suppress_phone, "opted out", now)
        if self.events is not None:
            self._stored_events(uow, decision, recipient, now, out)

    def _stored_events(
        self,
        uow: UnitOfWork,
        decision: ResultDecision,
        recipient: Recipient | None,
        now: datetime,
        out: list[DomainEvent],
    ) -> None:
        """The domain events of what :meth:`_store` stored."""
        attempt = decision.attempt
        if attempt is not None and attempt.status is _ENDED:
            new_status = (
                decision.recipient.status
                if decision.recipient is not None
                else (recipient.status if recipient is not None else RecipientStatus.COMPLETED)
            )
            out.append(
                CallEnded(
                    attempt.campaign_id,
                    attempt.workspace_id,
                    attempt.recipient_id,
                    attempt.id,
                    attempt.outcome,
                    new_status,
                    attempt.duration_seconds,
                    now,
                    attempt.error,
                    attempt.test_call,
                )
            )
            if decision.retry_at is not None:
                out.append(
                    RetryScheduled(
                        attempt.campaign_id,
                        attempt.workspace_id,
                        attempt.recipient_id,
                        decision.retry_at,
                        decision.reason or "",
                        now,
                    )
                )
        if decision.recipient is not None and recipient is not None:
            self._progress(uow, recipient.campaign_id, now, out)

    def _progress(
        self, uow: UnitOfWork, campaign_id: str, now: datetime, out: list[DomainEvent]
    ) -> None:
        if self.events is None:
            return
        try:
            c = uow.get_campaign(campaign_id)
        except NotFound:
            return
        out.append(ProgressUpdated(c.id, c.workspace_id, c.counters, now))

    def _emit(self, out: list[Any]) -> None:
        if self.events is None:
            return
        for event in out:
            self.events.emit(event)

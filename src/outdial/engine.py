"""The sans-IO dialer engine: facts in, decisions out.

The engine never reads a clock, sleeps, logs, touches a socket or a file, or
draws a random number it was not handed. Runners (:mod:`outdial.dialer`,
:mod:`outdial.aio`) load a :class:`Snapshot` from the repository, ask
:meth:`Engine.plan` what to do at ``now``, store the decisions and only then
talk to providers; results come back through :meth:`Engine.on_event`,
:meth:`Engine.on_placed`, :meth:`Engine.on_dial_error` and
:meth:`Engine.on_reconcile`.

What :meth:`Engine.plan` honours, together:

- scheduled start and expiry (activate / expire decisions);
- the campaign's business hours intersected with each recipient's permitted
  local hours under the campaign's calling-rule set;
- suppression (do-not-call) lists;
- concurrency limits per campaign, per workspace and global;
- calls-per-minute pacing and a minimum spacing between call starts;
- a daily cap per campaign (campaign-local calendar day);
- priority, then first-in-first-out order;
- fair round-robin between workspaces and between the campaigns of a
  workspace when a shared limit is the bottleneck (least recently served first);
- rolling attempt caps (retry policy and calling rules);
- automatic completion when nothing is left to dial.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

import attrs

from outdial._attrs import copier, maker, replace
from outdial._memo import Memo
from outdial._time import UTC, local_midnight, require_aware
from outdial.calendar import ALWAYS_OPEN, BusinessHours, Calendar
from outdial.campaign import Campaign, CampaignAction, CampaignCounters, CampaignStatus
from outdial.compliance import RuleSet, get_rule_set
from outdial.errors import (
    ConfigurationError,
    NoPermittedWindow,
    ProviderAuthError,
    ProviderError,
)
from outdial.outcomes import CallOutcome
from outdial.ports import CallEvent, CallStatus, DialStats, InFlightCounts, PlacedCall
from outdial.recipient import (
    RECIPIENT_TRANSITIONS,
    Attempt,
    AttemptStatus,
    Recipient,
    RecipientStatus,
    check_move,
)
from outdial.retry import Final, RandomSource, RetryAt, RetryDecision, land_in_window

__all__ = [
    "CampaignSnapshot",
    "CampaignTransition",
    "Defer",
    "Dial",
    "Engine",
    "EngineConfig",
    "Plan",
    "ResultDecision",
    "Skip",
    "Snapshot",
]

_MINUTE = timedelta(seconds=60)
_DAY = timedelta(days=1)
_ZERO = timedelta(0)

# copies of an attempt that always change the same fields (see outdial._attrs.copier)
_placed_attempt = copier(Attempt, "status", "provider", "external_call_id", "placed_at")
_ended_attempt = copier(
    Attempt,
    "status",
    "outcome",
    "ended_at",
    "duration_seconds",
    "error",
    "last_sequence",
    "external_call_id",
    "provider",
    "placed_at",
)

# copies of a recipient for the moves made on every call (after ``check_move``, or for a
# move RECIPIENT_TRANSITIONS always allows)
_calling_recipient = copier(Recipient, "status", "external_call_id", "updated_at")
_settled_recipient = copier(
    Recipient,
    "status",
    "next_attempt_at",
    "last_retry_delay_seconds",
    "attempts",
    "updated_at",
    "error",
    "outcome",
    "duration_seconds",
)
_PENDING = RecipientStatus.PENDING
_ACTIVE = CampaignStatus.ACTIVE
_SCHEDULED = CampaignStatus.SCHEDULED
_FINAL_CAMPAIGN = frozenset(status for status in CampaignStatus if status.final)
# enum members read on every call (a module global is ~10x cheaper than Enum.MEMBER)
_ENDED = AttemptStatus.ENDED
_DIALING = AttemptStatus.DIALING
_PLACED = AttemptStatus.PLACED
_QUEUED = RecipientStatus.QUEUED
_CALLING = RecipientStatus.CALLING
_ERROR = CallOutcome.ERROR
_OPTED_OUT = CallOutcome.OPTED_OUT
_CALL_ENDED = CallStatus.ENDED  # ``event.status is _CALL_ENDED`` is ``event.final``


#: ``timedelta(seconds=s)`` for the recipients' previous retry delays, which take few
#: values (the policies' backoffs): building a timedelta costs ~10x a look-up
_DELAYS: Memo[float, timedelta] = Memo(lambda seconds: timedelta(seconds=seconds))
#: ``delay.total_seconds()`` of the retry delays the engine stores: recipients retried
#: after the same delay share one float
_SECONDS: Memo[timedelta, float] = Memo(timedelta.total_seconds)

#: ``local_midnight(day, zone)`` by ``(zone, day)``: the start of a local day is asked for
#: on every dispatch round of a paced, capped or shared campaign, and is the same all day
#: (keyed by the day, not by an interval of instants: exact also where clocks go back
#: across midnight and an instant after a day's start still shows the day before)
_MIDNIGHTS: Memo[tuple[ZoneInfo, date], datetime] = Memo(lambda key: local_midnight(key[1], key[0]))


def _int_map(value: Mapping[str, int]) -> Mapping[str, int]:
    return MappingProxyType({str(k): int(v) for k, v in value.items()})


@attrs.frozen
class EngineConfig:
    """Limits and safety delays shared by every campaign a runner drives."""

    global_limit: int | None = None  # calls in flight across everything
    workspace_limits: Mapping[str, int] = attrs.field(
        factory=lambda: MappingProxyType({}), converter=_int_map
    )
    default_workspace_limit: int | None = None
    #: the most calls one dispatch round claims (None: as many as the limits allow).
    #: A worker of a fleet then claims its share and leaves the rest of the free slots
    #: to the others; a runner that reaches it dispatches again at once.
    max_dials_per_round: int | None = None
    candidate_slack: int = 8  # extra due recipients looked at per campaign per round
    #: a dial recorded but not confirmed for this long is reconciled with the provider
    dial_confirm_timeout: timedelta = timedelta(minutes=2)
    #: a placed call with no final event for this long is reconciled (lost webhook)
    call_timeout: timedelta = timedelta(hours=2)
    #: an attempt whose fate stays unknown this long is counted and retried
    give_up_unknown_after: timedelta = timedelta(hours=6)
    #: the earliest a call whose fate was unknown may be retried
    unknown_fate_delay: timedelta = timedelta(minutes=15)
    #: delay after a provider refused retryably without Retry-After (call not placed)
    provider_retry_delay: timedelta = timedelta(seconds=30)
    #: delay after the provider refused our credentials
    auth_retry_delay: timedelta = timedelta(minutes=5)

    def __attrs_post_init__(self) -> None:
        cap = self.max_dials_per_round
        if cap is not None and cap < 1:
            raise ConfigurationError("max_dials_per_round", cap, "must be at least 1 (or None)")

    def workspace_limit(self, workspace_id: str) -> int | None:
        return self.workspace_limits.get(workspace_id, self.default_workspace_limit)


# -- inputs ---------------------------------------------------------------------------


@attrs.frozen
class CampaignSnapshot:
    """What the engine is shown about one campaign at ``now``."""

    campaign: Campaign
    dial_stats: DialStats = DialStats()
    candidates: tuple[Recipient, ...] = ()  # due pending recipients, in dial order
    candidates_truncated: bool = False  # more due recipients may exist beyond these
    attempt_starts: Mapping[str, Sequence[datetime]] = attrs.field(factory=dict)
    suppressed: frozenset[str] = frozenset()
    next_due_at: datetime | None = None  # earliest future due time among pending
    #: the campaign's current counters (``UnitOfWork.dispatchable_campaigns`` gives them
    #: apart from the campaign); None: ``campaign.counters`` are current
    counters: CampaignCounters | None = None
    #: :meth:`Engine.campaign_capacity` of this campaign at the snapshot's instant, as
    #: the loader computed it to size ``candidates``; None: :meth:`Engine.plan` computes
    #: it. A snapshot describes one instant: plan it at the ``now`` it was loaded at.
    capacity: tuple[int, datetime | None] | None = None


@attrs.frozen
class Snapshot:
    campaigns: tuple[CampaignSnapshot, ...]
    in_flight: InFlightCounts = InFlightCounts()


# -- decisions ------------------------------------------------------------------------------


@attrs.frozen
class CampaignTransition:
    campaign_id: str
    action: CampaignAction
    reason: str | None = None


@attrs.frozen
class Dial:
    """Claim this recipient: record attempt ``attempt_number``, then place the call."""

    campaign_id: str
    recipient: Recipient
    attempt_number: int


@attrs.frozen
class Skip:
    recipient: Recipient
    reason: str


@attrs.frozen
class Defer:
    """Not now: the recipient is due again at ``until`` (its next permitted instant)."""

    recipient: Recipient
    until: datetime
    reason: str


@attrs.frozen
class Plan:
    transitions: tuple[CampaignTransition, ...] = ()
    dials: tuple[Dial, ...] = ()
    skips: tuple[Skip, ...] = ()
    defers: tuple[Defer, ...] = ()
    wake_at: datetime | None = None  # when the engine next needs to look (None: on events only)


class Effect(str, enum.Enum):
    """What a result did, for logs and callers."""

    APPLIED = "applied"
    PROGRESS = "progress"
    DUPLICATE = "duplicate"
    STALE = "stale"
    LATE = "late"  # the recipient already moved on; the attempt is recorded
    WAITING = "waiting"  # fate still unknown; look again later

    def __str__(self) -> str:
        return self.value


@attrs.frozen
class ResultDecision:
    """What to store after a call result. ``None`` fields mean 'unchanged'."""

    effect: Effect
    attempt: Attempt | None = None
    recipient: Recipient | None = None
    suppress_phone: str | None = None
    retry_at: datetime | None = None
    reason: str | None = None
    recheck_at: datetime | None = None


# decisions built on every call (see outdial._attrs.maker), the other fields at their defaults
_progress = maker(ResultDecision, "effect", "attempt", "recipient")
_settled = maker(ResultDecision, "effect", "attempt", "recipient", "retry_at", "reason")
_PROGRESS = Effect.PROGRESS
_APPLIED = Effect.APPLIED


# values built on every dispatch round (see outdial._attrs.maker): every field given
_new_dial = maker(Dial, "campaign_id", "recipient", "attempt_number")
_new_plan = maker(Plan, "transitions", "dials", "skips", "defers", "wake_at")


# -- the engine ------------------------------------------------------------------------------


class Engine:
    """Pure decisions for dialing. Holds only caches of pure computations."""

    def __init__(
        self,
        config: EngineConfig | None = None,
        *,
        rule_sets: Callable[[str], RuleSet] = get_rule_set,
    ) -> None:
        self.config = config or EngineConfig()
        self._rule_sets = rule_sets
        self._calendars: dict[tuple[Any, ...], Calendar | NoPermittedWindow] = {}
        # the last business hours hashed and their hash, in one tuple so that threads
        # never see a torn pair (campaign values read from one repository share the same
        # BusinessHours object: hashing it once is enough)
        self._hours_hash: tuple[BusinessHours | None, int] = (None, hash(None))

    # -- calendars ------------------------------------------------

    def campaign_calendar(self, campaign: Campaign) -> Calendar | None:
        """The campaign's own calling window (None: no restriction)."""
        hours = campaign.business_hours
        return hours if hours is not None and hours.enabled else None

    def _hash_hours(self, hours: BusinessHours | None) -> int:
        last, value = self._hours_hash
        if hours is not last:
            value = hash(hours)
            self._hours_hash = (hours, value)
        return value

    def permitted_calendar(self, campaign: Campaign, recipient: Recipient) -> Calendar:
        """Campaign hours intersected with the recipient's permitted local hours.

        Raises :class:`NoPermittedWindow` when the calling rules leave no time.
        """
        hours = campaign.business_hours
        own = hours if hours is not None and hours.enabled else None  # campaign_calendar
        if campaign.rule_set is None:
            return own if own is not None else ALWAYS_OPEN
        # Rules depend on the number's country, area code and zones: numbers that share
        # a long prefix and the same zones share them.
        key = (
            campaign.id,
            self._hash_hours(campaign.business_hours),
            campaign.rule_set,
            recipient.phone[:8],
            recipient.time_zones,
        )
        found = self._calendars.get(key)
        if found is None:
            try:
                rules = self._rule_sets(campaign.rule_set).calendar_for(recipient.phone)
                found = rules if own is None else own.intersect(rules)
            except NoPermittedWindow as exc:
                found = exc
            if len(self._calendars) > 200_000:
                self._calendars.clear()
            self._calendars[key] = found
        if isinstance(found, NoPermittedWindow):
            raise found
        return found

    def rule_caps_earliest(
        self, campaign: Campaign, recipient: Recipient, starts: Sequence[datetime], now: datetime
    ) -> datetime | None:
        """Earliest instant the retry policy's and calling rules' caps allow another call."""
        earliest = campaign.retry_policy.earliest_allowed(starts, now)
        if campaign.rule_set is not None and starts:
            for cap in self._rule_sets(campaign.rule_set).caps_for(recipient.phone):
                at = cap.earliest_allowed(starts, now)
                if at is not None and (earliest is None or at > earliest):
                    earliest = at
        return earliest

    # -- capacity ------------------------------------------------

    def campaign_capacity(
        self, campaign: Campaign, in_flight: int, stats: DialStats, now: datetime
    ) -> tuple[int, datetime | None]:
        """How many calls the campaign may start now, and when that may change.

        Only concurrency, pacing, spacing and the daily cap are considered here;
        shared (workspace/global) limits are applied by :meth:`plan`.
        """
        free = campaign.concurrency_limit - in_flight
        if free <= 0:
            return 0, None
        spacing = campaign.min_spacing
        cpm = campaign.calls_per_minute
        if cpm is None and campaign.daily_cap is None and spacing <= _ZERO:
            return free, None  # no pacing, spacing or daily cap: only concurrency counts
        wake: datetime | None = None
        if cpm is not None and cpm < 1:
            spacing = max(spacing, timedelta(seconds=60 / cpm))
        if spacing > _ZERO:
            if stats.last_start_at is not None and stats.last_start_at + spacing > now:
                return 0, stats.last_start_at + spacing
            free = 1
        if cpm is not None and cpm >= 1:
            recent = [t for t in stats.starts_since_minute if t > now - _MINUTE]
            allowed = int(cpm) - len(recent)
            if allowed <= 0:
                return 0, recent[len(recent) - int(cpm)] + _MINUTE if recent else None
            free = min(free, allowed)
        if campaign.daily_cap is not None:
            left = campaign.daily_cap - stats.starts_today
            if left <= 0:
                return 0, self.next_day_start(campaign, now)
            free = min(free, left)
        return free, wake

    @staticmethod
    def day_start(campaign: Campaign, now: datetime) -> datetime:
        """Start of the campaign-local calendar day containing ``now`` (for the daily cap)."""
        zone = ZoneInfo(campaign.timezone)
        return _MIDNIGHTS[zone, now.astimezone(zone).date()]

    @staticmethod
    def next_day_start(campaign: Campaign, now: datetime) -> datetime:
        zone = ZoneInfo(campaign.timezone)
        return _MIDNIGHTS[zone, now.astimezone(zone).date() + _DAY]

    def candidates_wanted(self, campaign: Campaign, capacity: int) -> int:
        """How many due recipients a runner should load for a campaign with ``capacity``:
        a little more than it can dial, in case some must be skipped or deferred (when all
        of them are, the engine asks to look again at once)."""
        if capacity <= 0:
            return 0
        config = self.config
        cap = config.max_dials_per_round
        if cap is not None and cap < capacity:
            capacity = cap
        slack = config.candidate_slack
        return capacity + (slack if slack < capacity else capacity)

    def needs_attempt_starts(self, campaign: Campaign) -> bool:
        """Whether rolling caps apply (policy caps or a calling-rule set)."""
        return bool(campaign.retry_policy.caps) or campaign.rule_set is not None

    def needs_next_due(self, campaign: Campaign, capacity: int, loaded: int, wanted: int) -> bool:
        """Whether :meth:`plan` can use the campaign's ``next_due_at`` when it has
        ``capacity`` free slots and ``loaded`` of the ``wanted`` candidates were found.

        Not when no slot is free, nor when more candidates wait than it can dial and
        no shared limit can stop it short: then it either spends its capacity or
        runs out of candidates and looks again at once.
        """
        if capacity <= 0:
            return False
        if loaded < wanted:
            return True
        config = self.config
        # config.workspace_limit(campaign.workspace_id), inline (it is asked every round)
        return (
            config.global_limit is not None
            or config.workspace_limits.get(campaign.workspace_id, config.default_workspace_limit)
            is not None
        )

    @staticmethod
    def needs_dial_stats(campaign: Campaign) -> bool:
        """Whether pacing, spacing or a daily cap apply to the campaign."""
        return (
            campaign.calls_per_minute is not None
            or campaign.daily_cap is not None
            or campaign.min_spacing > _ZERO
        )

    # -- dispatch ------------------------------------------------

    def plan(self, now: datetime, snapshot: Snapshot) -> Plan:
        """The round's decisions at ``now``, for a ``snapshot`` loaded at that instant."""
        transitions: list[CampaignTransition] = []
        wakes: list[datetime] = []
        active: list[_CampaignCursor] = []
        inflight = snapshot.in_flight
        by_campaign = inflight.by_campaign
        for cs in snapshot.campaigns:
            c = cs.campaign
            status = c.status
            if c.deleted_at is not None or status in _FINAL_CAMPAIGN:
                continue
            expires_at = c.expires_at
            if expires_at is not None:
                if expires_at <= now and c.can(CampaignAction.EXPIRE):
                    transitions.append(CampaignTransition(c.id, CampaignAction.EXPIRE, "expired"))
                    continue
                if expires_at > now:
                    wakes.append(expires_at)
            if status is _SCHEDULED:
                start = c.scheduled_start_at
                if start is None or start <= now:
                    transitions.append(
                        CampaignTransition(c.id, CampaignAction.ACTIVATE, "scheduled start")
                    )
                    wakes.append(now)
                else:
                    wakes.append(start)
                continue
            counters = cs.counters
            if counters is None:
                counters = c.counters
            # counters.remaining == 0, inline (a property call every round)
            if counters.pending + counters.queued + counters.calling == 0:
                transitions.append(
                    CampaignTransition(c.id, CampaignAction.COMPLETE, "nothing left to dial")
                )
                continue
            if status is not _ACTIVE:
                continue
            known = cs.capacity
            capacity, cap_wake = (
                self.campaign_capacity(c, by_campaign.get(c.id, 0), cs.dial_stats, now)
                if known is None
                else known
            )
            if cap_wake is not None:
                wakes.append(cap_wake)
            if capacity > 0 and cs.candidates:
                active.append(_CampaignCursor(self, cs, capacity, now))
            elif capacity > 0 and cs.next_due_at is not None:
                wakes.append(max(cs.next_due_at, now))
            # A campaign with no free slot needs no wake for its next due recipient: the
            # call that ends first frees a slot and the runner looks again then.

        dials: list[Dial] = []
        config = self.config
        global_limit = config.global_limit
        global_free = global_limit - inflight.total if global_limit is not None else None
        round_cap = config.max_dials_per_round
        budget = global_free
        if round_cap is not None and (budget is None or round_cap < budget):
            budget = round_cap
        if len(active) == 1:
            self._allocate_one(active[0], inflight, budget, dials)
        elif active:
            self._allocate_fair(active, inflight, budget, dials)
        if round_cap is not None and len(dials) >= round_cap:
            wakes.append(now)  # the round's cap was reached: more may be claimed at once

        skips: tuple[Skip, ...] = ()  # most rounds skip and defer no one
        defers: tuple[Defer, ...] = ()
        for cur in active:
            if cur.skips:
                skips += tuple(cur.skips)
            if cur.defers:
                defers += tuple(cur.defers)
                wakes.extend(d.until for d in cur.defers)
            if cur.capacity > 0:
                due = cur.snapshot.next_due_at
                if due is not None:
                    wakes.append(max(due, now))
                if cur.exhausted and cur.snapshot.candidates_truncated:
                    wakes.append(now)  # more due recipients may be waiting behind these
        if skips:
            wakes.append(now)  # skipping may have left a campaign with nothing to dial
        wake_at = min(wakes) if wakes else None
        if wake_at is not None and wake_at < now:
            wake_at = now
        return _new_plan(
            tuple(transitions) if transitions else (), tuple(dials), skips, defers, wake_at
        )

    def _allocate_one(
        self,
        cur: _CampaignCursor,
        inflight: InFlightCounts,
        global_free: int | None,
        dials: list[Dial],
    ) -> None:
        """:meth:`_allocate_fair` for one campaign: dial it until its capacity, its
        workspace limit or the global limit is spent (the same dials, without queues)."""
        ws = cur.campaign.workspace_id
        config = self.config
        limit = config.workspace_limits.get(ws, config.default_workspace_limit)  # workspace_limit
        free = None if limit is None else limit - inflight.by_workspace.get(ws, 0)
        while (global_free is None or global_free > 0) and (free is None or free > 0):
            dial = cur.next_dial()
            if dial is None:
                return
            dials.append(dial)
            if global_free is not None:
                global_free -= 1
            if free is not None:
                free -= 1
            if cur.capacity <= 0:
                return

    def _allocate_fair(
        self,
        active: list[_CampaignCursor],
        inflight: InFlightCounts,
        global_free: int | None,
        dials: list[Dial],
    ) -> None:
        """Fair allocation: workspaces least recently served first, round-robin; inside
        a workspace, its campaigns round-robin the same way."""
        by_ws: dict[str, deque[_CampaignCursor]] = {}
        for cur in sorted(active, key=_served_key):
            by_ws.setdefault(cur.campaign.workspace_id, deque()).append(cur)
        ws_free: dict[str, int | None] = {}
        for ws in by_ws:
            limit = self.config.workspace_limit(ws)
            ws_free[ws] = None if limit is None else limit - inflight.by_workspace.get(ws, 0)
        order = deque(by_ws)
        while order and (global_free is None or global_free > 0):
            ws = order.popleft()
            queue = by_ws[ws]
            free = ws_free[ws]
            if free is not None and free <= 0:
                continue
            cur = queue.popleft()
            dial = cur.next_dial()
            if dial is not None:
                dials.append(dial)
                if global_free is not None:
                    global_free -= 1
                if free is not None:
                    ws_free[ws] = free - 1
                if cur.capacity > 0:
                    queue.append(cur)
            if queue:
                order.append(ws)

    # -- results ------------------------------------------------

    def on_placed(
        self, now: datetime, attempt: Attempt, recipient: Recipient | None, placed: PlacedCall
    ) -> ResultDecision:
        """The provider accepted the call."""
        if attempt.status is not _DIALING:
            # a webhook was faster than the API response: keep what it recorded
            if attempt.external_call_id is None:
                return ResultDecision(
                    Effect.PROGRESS,
                    attempt=replace(
                        attempt, external_call_id=placed.external_call_id, provider=placed.provider
                    ),
                )
            return ResultDecision(Effect.DUPLICATE, reason="already confirmed")
        new_attempt = _placed_attempt(
            attempt, _PLACED, placed.provider, placed.external_call_id, now
        )
        new_recipient = None
        if recipient is not None and recipient.status is _QUEUED:
            # queued -> calling: a move RECIPIENT_TRANSITIONS always allows (no check_move)
            new_recipient = _calling_recipient(recipient, _CALLING, placed.external_call_id, now)
        return _progress(_PROGRESS, new_attempt, new_recipient)

    def on_dial_error(
        self,
        now: datetime,
        campaign: Campaign,
        attempt: Attempt,
        recipient: Recipient | None,
        error: ProviderError,
        history: Sequence[Attempt],
        rng: RandomSource | None = None,
    ) -> ResultDecision:
        """``place_call`` raised. Unknown fate waits for reconciliation; a certain refusal
        ends the attempt (not counted when retryable: the call never happened)."""
        text = str(error)[:500]
        if attempt.status is not AttemptStatus.DIALING:
            # a webhook already told us more than this error can
            return ResultDecision(Effect.DUPLICATE, reason="attempt already confirmed or ended")
        if error.placed is None or error.placed is True:
            return ResultDecision(
                Effect.WAITING,
                attempt=replace(attempt, error=text),
                recheck_at=now + self.config.dial_confirm_timeout,
                reason="provider did not say whether the call was placed",
            )
        if attempt.test_call or recipient is None:
            ended = replace(attempt, status=AttemptStatus.ENDED, ended_at=now, error=text)
            return ResultDecision(Effect.APPLIED, attempt=ended, reason=text)
        if error.retryable or isinstance(error, ProviderAuthError):
            # not placed: give the recipient its attempt back and try again later
            delay = error.retry_after or (
                self.config.auth_retry_delay
                if isinstance(error, ProviderAuthError)
                else self.config.provider_retry_delay
            )
            ended = replace(attempt, status=AttemptStatus.ENDED, ended_at=now, error=text)
            decision = self._landed(
                RetryAt(now + delay, delay, f"provider refused: {text}"), campaign, recipient
            )
            return self._retry_or_final(
                now, campaign, ended, recipient, decision, None, counted=False, error=text
            )
        outcome = error.outcome if isinstance(error.outcome, CallOutcome) else CallOutcome.ERROR
        ended = replace(
            attempt, status=AttemptStatus.ENDED, ended_at=now, outcome=outcome, error=text
        )
        starts = _counted_starts(history, include=attempt)
        decision = campaign.retry_policy.decide(
            outcome=outcome, attempts=starts, ended_at=now, retryable=False, rng=rng
        )
        return self._retry_or_final(now, campaign, ended, recipient, decision, outcome, error=text)

    def on_event(
        self,
        now: datetime,
        campaign: Campaign,
        attempt: Attempt,
        recipient: Recipient | None,
        event: CallEvent,
        history: Sequence[Attempt],
        rng: RandomSource | None = None,
    ) -> ResultDecision:
        """Apply one provider event to its attempt, exactly once and only forwards.

        ``history`` is the recipient's attempts (the repository's ``attempts_for``); it
        may be empty when :meth:`needs_history` is false for ``campaign`` and ``event``.
        """
        if attempt.status is _ENDED:
            return ResultDecision(Effect.DUPLICATE, reason="attempt already ended")
        seq = event.sequence
        if seq is not None and seq <= attempt.last_sequence:
            return ResultDecision(Effect.STALE, reason=f"sequence {seq} already applied")
        last_seq = attempt.last_sequence if seq is None else seq
        if event.status is not _CALL_ENDED:  # not event.final
            changes: dict[str, Any] = {"last_sequence": last_seq}
            if attempt.status is AttemptStatus.DIALING:
                changes.update(status=AttemptStatus.PLACED, placed_at=event.occurred_at or now)
            if event.external_call_id and not attempt.external_call_id:
                changes["external_call_id"] = event.external_call_id
            if attempt.provider is None:
                changes["provider"] = event.provider
            if event.status is CallStatus.IN_PROGRESS and attempt.answered_at is None:
                changes["answered_at"] = event.occurred_at or now
            new_recipient = None
            if (
                recipient is not None
                and not attempt.test_call
                and recipient.status is RecipientStatus.QUEUED
                and recipient.attempts == attempt.number
            ):
                new_recipient = recipient.moved_to(
                    RecipientStatus.CALLING,
                    external_call_id=changes.get("external_call_id", attempt.external_call_id),
                    updated_at=now,
                )
            return ResultDecision(
                Effect.PROGRESS, attempt=replace(attempt, **changes), recipient=new_recipient
            )

        outcome = event.outcome or _ERROR
        created_at = attempt.created_at
        ended_at = event.occurred_at or now
        if ended_at < created_at:  # noqa: PLR1730 - max() would cost a builtin call
            ended_at = created_at
        duration = event.duration_seconds
        error = event.error
        ended = _ended_attempt(
            attempt,
            _ENDED,
            outcome,
            ended_at,
            duration,
            error,
            last_seq,
            attempt.external_call_id or event.external_call_id,
            attempt.provider or event.provider,
            attempt.placed_at or created_at,
        )
        suppress = recipient.phone if outcome is _OPTED_OUT and recipient is not None else None
        if attempt.test_call or recipient is None:
            return ResultDecision(Effect.APPLIED, attempt=ended, suppress_phone=suppress)
        status = recipient.status
        # not status.in_flight, inline
        if (status is not _CALLING and status is not _QUEUED) or (
            recipient.attempts != attempt.number
        ):
            return ResultDecision(
                Effect.LATE,
                attempt=ended,
                suppress_phone=suppress,
                reason="recipient already moved on",
            )
        prev_seconds = recipient.last_retry_delay_seconds
        decision: RetryDecision = campaign.retry_policy.decide(
            outcome=outcome,
            attempts=_counted_starts(history, attempt),
            ended_at=ended_at,
            retryable=event.retryable,
            retry_after=event.retry_after,
            previous_delay=None if prev_seconds is None else _DELAYS[prev_seconds],
            rng=rng,
        )
        if isinstance(decision, RetryAt):
            if outcome is _OPTED_OUT:
                decision = Final(RecipientStatus.COMPLETED, outcome, "opted out")
            decision = self._landed(decision, campaign, recipient)
        result = self._retry_or_final(
            now, campaign, ended, recipient, decision, outcome, True, duration, error
        )
        return result if suppress is None else replace(result, suppress_phone=suppress)

    def on_reconcile(
        self,
        now: datetime,
        campaign: Campaign,
        attempt: Attempt,
        recipient: Recipient | None,
        view: CallEvent | ProviderError | None,
        history: Sequence[Attempt],
        rng: RandomSource | None = None,
    ) -> ResultDecision:
        """Decide an attempt whose fate was unknown, from what the provider says now.

        ``view`` is the provider's event for the call, ``None`` when the provider
        certainly has no such call, or the error raised when it cannot tell.
        """
        if attempt.status is AttemptStatus.ENDED:
            return ResultDecision(Effect.DUPLICATE, reason="attempt already ended")
        if isinstance(view, CallEvent):
            return self.on_event(now, campaign, attempt, recipient, view, history, rng)
        if view is None and attempt.status is AttemptStatus.DIALING:
            ended = replace(
                attempt,
                status=AttemptStatus.ENDED,
                ended_at=now,
                error="never placed (reconciled with the provider)",
            )
            if attempt.test_call or recipient is None:
                return ResultDecision(Effect.APPLIED, attempt=ended)
            decision = self._landed(RetryAt(now, timedelta(0), "never placed"), campaign, recipient)
            return self._retry_or_final(
                now, campaign, ended, recipient, decision, None, counted=False
            )
        # The provider cannot tell (or lost a call it had accepted): wait, then give up safely.
        if now - attempt.created_at < self.config.give_up_unknown_after:
            return ResultDecision(
                Effect.WAITING,
                recheck_at=now + self.config.dial_confirm_timeout,
                reason="fate unknown; asking again later",
            )
        ended = replace(
            attempt,
            status=AttemptStatus.ENDED,
            ended_at=now,
            outcome=CallOutcome.ERROR,
            error="fate unknown; given up after reconciliation",
        )
        if attempt.test_call or recipient is None:
            return ResultDecision(Effect.APPLIED, attempt=ended)
        if not recipient.status.in_flight or recipient.attempts != attempt.number:
            return ResultDecision(Effect.LATE, attempt=ended)
        starts = _counted_starts(history, include=attempt)
        decision = campaign.retry_policy.decide(
            outcome=CallOutcome.ERROR, attempts=starts, ended_at=now, rng=rng
        )
        if isinstance(decision, RetryAt):
            safe = now + self.config.unknown_fate_delay
            if decision.at < safe:
                decision = RetryAt(safe, safe - now, "fate unknown: retry after a safe delay")
        decision = self._landed(decision, campaign, recipient)
        return self._retry_or_final(
            now, campaign, ended, recipient, decision, CallOutcome.ERROR, error=ended.error
        )

    @staticmethod
    def needs_history(campaign: Campaign, event: CallEvent) -> bool:
        """Whether :meth:`on_event` reads the recipient's attempt history for ``event``:
        only for a final event whose outcome the campaign's retry policy may retry
        (:meth:`RetryPolicy.may_retry <outdial.retry.RetryPolicy.may_retry>`), where the
        count and start instants of the attempts so far decide the retry. Otherwise the
        caller may pass an empty history: the decision is the same."""
        return event.status is _CALL_ENDED and campaign.retry_policy.may_retry(
            event.outcome or _ERROR, retryable=event.retryable
        )

    def needs_reconcile(self, attempt: Attempt, now: datetime) -> bool:
        """Whether an unfinished attempt is old enough to ask the provider about (never
        one younger than :meth:`reconcile_age`)."""
        status = attempt.status
        if status is _DIALING:
            return now - attempt.created_at >= self.config.dial_confirm_timeout
        if status is _PLACED:
            return now - attempt.created_at >= self.config.call_timeout
        return False

    def reconcile_age(self) -> timedelta:
        """The age below which :meth:`needs_reconcile` is false for every attempt: a
        runner need not even load the unfinished attempts younger than that."""
        config = self.config
        return min(config.dial_confirm_timeout, config.call_timeout)

    # -- helpers ------------------------------------------------

    def _landed(
        self, decision: RetryDecision, campaign: Campaign, recipient: Recipient
    ) -> RetryDecision:
        if not isinstance(decision, RetryAt):
            return decision
        try:
            calendar = self.permitted_calendar(campaign, recipient)
        except NoPermittedWindow as exc:
            return Final(RecipientStatus.SKIPPED, None, f"no permitted window: {exc.reason}")
        if calendar is ALWAYS_OPEN:
            return decision  # what land_in_window gives: every instant is open
        return land_in_window(decision, calendar)

    def _retry_or_final(
        self,
        now: datetime,
        campaign: Campaign,
        attempt: Attempt,
        recipient: Recipient,
        decision: RetryDecision,
        outcome: CallOutcome | None,
        counted: bool = True,
        duration: float | None = None,
        error: str | None = None,
    ) -> ResultDecision:
        attempts = recipient.attempts if counted else max(0, recipient.attempts - 1)
        # fields not given keep the recipient's value (what moved_to would leave alone)
        kept_outcome = recipient.outcome if outcome is None else outcome
        if duration is None:
            duration = recipient.duration_seconds
        if isinstance(decision, RetryAt):
            if campaign.status not in _FINAL_CAMPAIGN:
                if recipient.status is not _CALLING:  # calling -> pending: the table allows it
                    check_move(recipient, _PENDING)
                new = _settled_recipient(
                    recipient,
                    _PENDING,
                    decision.at,
                    _SECONDS[decision.delay],
                    attempts,
                    now,
                    error,
                    kept_outcome,
                    duration,
                )
                return _settled(_APPLIED, attempt, new, decision.at, decision.reason)
            decision = Final(RecipientStatus.SKIPPED, outcome, f"campaign {campaign.status.value}")
        status = decision.status
        if status is _PENDING:  # defensive: a final decision is final
            status = RecipientStatus.FAILED
        if (recipient.status, status) not in RECIPIENT_TRANSITIONS:
            check_move(recipient, status)  # raises InvalidTransition
        new = _settled_recipient(
            recipient,
            status,
            None,
            recipient.last_retry_delay_seconds,
            attempts,
            now,
            error,
            kept_outcome,
            duration,
        )
        return _settled(_APPLIED, attempt, new, None, decision.reason)


class _CampaignCursor:
    """Walks one campaign's due candidates, producing dials, skips and defers."""

    __slots__ = (
        "_iter",
        "campaign",
        "capacity",
        "defers",
        "engine",
        "exhausted",
        "now",
        "skips",
        "snapshot",
    )

    def __init__(self, engine: Engine, snapshot: CampaignSnapshot, capacity: int, now: datetime):
        self.engine = engine
        self.snapshot = snapshot
        self.campaign = snapshot.campaign
        self.capacity = capacity
        self.now = now
        self._iter: Iterator[Recipient] = iter(snapshot.candidates)
        self.skips: list[Skip] = []
        self.defers: list[Defer] = []
        self.exhausted = False

    @property
    def last_served(self) -> datetime | None:
        return self.snapshot.dial_stats.last_start_at

    def next_dial(self) -> Dial | None:
        if self.capacity <= 0:
            return None
        engine, campaign, now, snapshot = self.engine, self.campaign, self.now, self.snapshot
        suppressed = snapshot.suppressed
        for recipient in self._iter:
            if recipient.phone in suppressed:
                self.skips.append(Skip(recipient, "suppressed (do not call)"))
                continue
            try:
                calendar = engine.permitted_calendar(campaign, recipient)
            except NoPermittedWindow as exc:
                self.skips.append(Skip(recipient, f"no permitted window: {exc.reason}"))
                continue
            if calendar is ALWAYS_OPEN:
                if now.tzinfo is not UTC:  # an instant in UTC is aware
                    require_aware(now, "BusinessHours.is_open")  # what is_open would check
            elif not calendar.is_open(now):
                opens = calendar.next_open(now)
                if opens is None:
                    self.skips.append(Skip(recipient, "no permitted window: calendar never opens"))
                else:
                    self.defers.append(Defer(recipient, opens, "outside calling window"))
                continue
            attempts = recipient.attempts
            if attempts >= campaign.retry_policy.max_attempts:  # campaign.max_attempts
                self.skips.append(Skip(recipient, "max attempts reached"))
                continue
            starts = (
                snapshot.attempt_starts.get(recipient.id, ()) if snapshot.attempt_starts else ()
            )
            if starts:
                earliest = engine.rule_caps_earliest(campaign, recipient, starts, now)
                if earliest is not None and earliest > now:
                    landed = calendar.next_open(earliest)
                    if landed is None:
                        self.skips.append(Skip(recipient, "no permitted window after caps"))
                    else:
                        self.defers.append(Defer(recipient, landed, "attempt cap reached"))
                    continue
            self.capacity -= 1
            return _new_dial(campaign.id, recipient, attempts + 1)
        self.exhausted = True
        return None


def _served_key(cursor: _CampaignCursor) -> tuple[int, datetime | None, str]:
    last = cursor.last_served
    return (0, None, cursor.campaign.id) if last is None else (1, last, cursor.campaign.id)


def _counted_starts(history: Sequence[Attempt], include: Attempt) -> list[datetime]:
    """Start instants of the attempts that count against the budget (test calls and
    calls that were never placed do not)."""
    include_id = include.id
    starts = []  # a loop: cheaper than a list comprehension for the few attempts of a recipient
    for a in history:
        if (
            a.id != include_id
            and not a.test_call
            and (a.outcome is not None or a.status is not _ENDED)
        ):
            starts.append(a.created_at)
    starts.append(include.created_at)  # in place of its version in ``history``, if any
    if len(starts) > 1:
        starts.sort()
    return starts

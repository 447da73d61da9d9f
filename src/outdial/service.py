"""The campaign service: what a web service calls from its API handlers.

Every call is scoped to a workspace; another workspace's campaign answers
:class:`~outdial.errors.NotFound`, exactly like a campaign that does not exist.
The seeds' routes map onto methods: create/save/finalize drafts, update,
delete, start, pause, resume, terminate, list, get with stats, list/add/import
recipients, test call, apply a provider event, stats.
"""

from __future__ import annotations

import importlib.util
import math
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import IO, Any

import attrs

from outdial.calendar import BusinessHours
from outdial.campaign import (
    AgentSettings,
    Campaign,
    CampaignAction,
    CampaignCounters,
    CampaignStatus,
    ScheduleType,
)
from outdial.compliance import get_rule_set
from outdial.csv_import import ImportReport, import_recipients_csv
from outdial.dispatch import Claim, DialerCore, EventResult, build_dial_request
from outdial.engine import Engine
from outdial.errors import (
    CampaignValidationError,
    ConfigurationError,
    DuplicateRecipient,
    InvalidPhoneNumber,
    InvalidTransition,
    NotFound,
    Problem,
    ProviderError,
    RowLimitExceeded,
)
from outdial.events import DomainEvent
from outdial.outcomes import CallOutcome
from outdial.phone import mask_phone, parse_phone
from outdial.ports import CallEvent, CallProvider, Clock, EventSink, Page, Repository, SystemClock
from outdial.recipient import Attempt, Recipient, RecipientStatus
from outdial.retry import RetryPolicy
from outdial.templates import STANDARD_FIELDS, placeholders

__all__ = [
    "CampaignDetails",
    "CampaignService",
    "CampaignStats",
    "DraftResult",
    "ImportSummary",
    "RecipientInput",
    "default_agent_problems",
]

#: Campaign fields a draft or an update may set.
EDITABLE_FIELDS = frozenset(
    {
        "name",
        "description",
        "agent",
        "schedule_type",
        "scheduled_start_at",
        "expires_at",
        "timezone",
        "business_hours",
        "rule_set",
        "default_region",
        "concurrency_limit",
        "calls_per_minute",
        "min_spacing",
        "daily_cap",
        "retry_policy",
        "prompt_variables",
        "csv_column_headers",
        "max_recipients",
    }
)

UNTITLED = "Untitled Campaign"


@attrs.frozen
class DraftResult:
    campaign: Campaign
    reused: bool


@attrs.frozen
class RecipientInput:
    """One recipient to add (the seeds' CreateRecipientInput)."""

    phone_number: str
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    company: str | None = None
    variables: Mapping[str, str] = attrs.field(factory=dict)
    priority: int = 0


@attrs.frozen
class ImportSummary:
    imported: int
    duplicates: int
    problems: tuple[Problem, ...] = ()


@attrs.frozen
class CampaignStats:
    total: int
    pending: int
    in_flight: int
    completed: int
    answered: int
    failed: int
    skipped: int
    attempts: int
    by_outcome: Mapping[str, int]
    answer_rate: float | None  # answered / recipients that reached a final state after a call
    average_duration_seconds: float | None  # over answered calls
    estimated_completion_at: datetime | None

    @property
    def progress(self) -> float:
        return (
            1.0 if self.total == 0 else (self.completed + self.failed + self.skipped) / self.total
        )

    def to_dict(self) -> dict[str, Any]:
        from outdial.serialization import unstructure

        data: dict[str, Any] = unstructure(self)
        data["progress"] = self.progress
        return data


@attrs.frozen
class CampaignDetails:
    campaign: Campaign
    stats: CampaignStats


def default_agent_problems(agent: AgentSettings) -> list[Problem]:
    """The seeds' agent checks, per provider: a provider, the provider's agent id and a
    caller id (see :func:`outdial.providers.validate_agent`)."""
    from outdial.providers.registry import validate_agent

    return validate_agent(agent)


class CampaignService:
    """Workspace-scoped campaign operations over a repository."""

    def __init__(
        self,
        repository: Repository,
        *,
        clock: Clock | None = None,
        engine: Engine | None = None,
        events: EventSink | None = None,
        providers: CallProvider | Mapping[str, CallProvider] | None = None,
        new_id: Callable[[], str] | None = None,
        agent_problems: Callable[[AgentSettings], list[Problem]] = default_agent_problems,
        draft_reuse_window: timedelta = timedelta(seconds=30),
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.repository = repository
        self.clock: Clock = clock or SystemClock()
        self.new_id = new_id or (lambda: uuid.uuid4().hex)
        self._custom_ids = new_id is not None
        self.core = DialerCore(repository, engine, events=events, new_id=self.new_id)
        self.providers = providers
        self.agent_problems = agent_problems
        self.draft_reuse_window = draft_reuse_window
        self._on_change = on_change

    # -- helpers ------------------------------------------------

    def _now(self) -> datetime:
        return self.clock.now()

    def _get(self, uow: Any, workspace_id: str, campaign_id: str) -> Campaign:
        campaign: Campaign = uow.get_campaign(campaign_id, workspace_id)
        if campaign.deleted:
            raise NotFound("campaign", campaign_id)
        return campaign

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    def _emit(self, out: list[DomainEvent]) -> None:
        self.core._emit(out)

    # -- drafts ------------------------------------------------

    def create_draft(
        self,
        workspace_id: str,
        *,
        created_by: str | None = None,
        agent: AgentSettings | None = None,
    ) -> DraftResult:
        """An empty draft; a second create within 30 s returns the same untitled draft."""
        now = self._now()
        with self.repository.transaction() as uow:
            recent = uow.find_recent_draft(workspace_id, created_by, now - self.draft_reuse_window)
            if recent is not None and not recent.deleted:
                return DraftResult(recent, reused=True)
            campaign = Campaign(
                id=self.new_id(),
                workspace_id=workspace_id,
                created_at=now,
                updated_at=now,
                name=UNTITLED,
                created_by=created_by,
                agent=agent or AgentSettings(),
                business_hours=BusinessHours.weekly("UTC", {"mon-fri": [("09:00", "17:00")]}),
            )
            uow.add_campaign(campaign)
        return DraftResult(campaign, reused=False)

    def save_draft(
        self,
        workspace_id: str,
        campaign_id: str,
        *,
        recipients: Iterable[RecipientInput | Mapping[str, Any]] | None = None,
        **changes: Any,
    ) -> Campaign:
        """Save partial wizard progress (any step). Only drafts."""
        with self.repository.transaction() as uow:
            campaign = self._get(uow, workspace_id, campaign_id)
            if campaign.status is not CampaignStatus.DRAFT:
                raise InvalidTransition(campaign.status, "save draft of")
            stored = self._update(uow, campaign, changes)
            if recipients is not None:
                summary = self._add_inputs(uow, stored, recipients)
                if summary.problems:  # nothing of this save is stored
                    raise CampaignValidationError(summary.problems)
                stored = uow.get_campaign(campaign_id)
        return stored

    def create(
        self,
        workspace_id: str,
        *,
        created_by: str | None = None,
        recipients: Iterable[RecipientInput | Mapping[str, Any]] = (),
        finalize: bool = True,
        **fields: Any,
    ) -> Campaign:
        """Create a campaign in one call (the seeds' POST /campaigns): a draft with
        ``fields`` and ``recipients``, finalized to ready unless ``finalize=False``."""
        now = self._now()
        with self.repository.transaction() as uow:
            campaign = Campaign(
                id=self.new_id(),
                workspace_id=workspace_id,
                created_at=now,
                updated_at=now,
                created_by=created_by,
            )
            uow.add_campaign(campaign)
            stored = self._update(uow, campaign, fields)
            summary = self._add_inputs(uow, stored, recipients)
            if summary.problems:  # nothing is stored: the transaction rolls back
                raise CampaignValidationError(summary.problems)
            if finalize:
                stored = self._finalize(uow, uow.get_campaign(stored.id), now)
        return stored

    def finalize(self, workspace_id: str, campaign_id: str) -> Campaign:
        """Draft -> ready; every problem is reported at once."""
        now = self._now()
        with self.repository.transaction() as uow:
            campaign = self._get(uow, workspace_id, campaign_id)
            stored = self._finalize(uow, campaign, now)
        return stored

    def _finalize(self, uow: Any, campaign: Campaign, now: datetime) -> Campaign:
        if campaign.status is not CampaignStatus.DRAFT:
            raise InvalidTransition(campaign.status, CampaignAction.FINALIZE)
        problems = self.problems(campaign)
        if problems:
            raise CampaignValidationError(problems)
        result: Campaign = uow.save_campaign(campaign.apply(CampaignAction.FINALIZE, now))
        return result

    def problems(self, campaign: Campaign) -> list[Problem]:
        """Everything that stops ``campaign`` from being finalized or started."""
        problems: list[Problem] = []
        name = campaign.name.strip()
        if not name or name == UNTITLED:
            problems.append(Problem("name", "a campaign name is required"))
        problems.extend(self.agent_problems(campaign.agent))
        if campaign.counters.total == 0:
            problems.append(Problem("recipients", "no recipients imported"))
        hours = campaign.business_hours
        if hours is not None and hours.enabled and hours.is_empty:
            problems.append(Problem("business_hours", "business hours enabled but empty"))
        if campaign.schedule_type is ScheduleType.SCHEDULED and campaign.scheduled_start_at is None:
            problems.append(
                Problem("scheduled_start_at", "a scheduled campaign needs a start time")
            )
        if (
            campaign.expires_at is not None
            and campaign.scheduled_start_at is not None
            and campaign.expires_at <= campaign.scheduled_start_at
        ):
            problems.append(Problem("expires_at", "expires before it starts"))
        if campaign.rule_set is not None:
            try:
                rules = get_rule_set(campaign.rule_set)
            except NotFound:
                problems.append(
                    Problem("rule_set", f"unknown calling-rule set {campaign.rule_set!r}")
                )
            else:
                needs_holidays = any(r.no_public_holidays for r in rules.rules)
                if needs_holidays and importlib.util.find_spec("holidays") is None:
                    problems.append(
                        Problem(
                            "rule_set",
                            f"{campaign.rule_set!r} closes public holidays: "
                            "pip install 'outdial[holidays]'",
                        )
                    )
        known = (
            set(STANDARD_FIELDS) | set(campaign.prompt_variables) | set(campaign.csv_column_headers)
        )
        for field in ("prompt_template", "greeting_template"):
            template = getattr(campaign.agent, field)
            if not template:
                continue
            try:
                names = placeholders(template, f"agent.{field}")
            except ConfigurationError as exc:
                problems.append(Problem(f"agent.{field}", exc.reason))
                continue
            for missing in sorted(names - known):
                problems.append(
                    Problem(f"agent.{field}", f"placeholder {{{missing}}} that no recipient has")
                )
        return problems

    # -- updates and deletion ------------------------------------------------

    def update(self, workspace_id: str, campaign_id: str, **changes: Any) -> Campaign:
        """Change settings of a draft or ready campaign."""
        with self.repository.transaction() as uow:
            campaign = self._get(uow, workspace_id, campaign_id)
            if not campaign.status.editable:
                raise InvalidTransition(campaign.status, "update")
            return self._update(uow, campaign, changes)

    def _update(self, uow: Any, campaign: Campaign, changes: Mapping[str, Any]) -> Campaign:
        unknown = set(changes) - EDITABLE_FIELDS
        if unknown:
            raise ConfigurationError(
                ", ".join(sorted(unknown)), sorted(unknown), "cannot be set on a campaign"
            )
        values = dict(changes)
        if isinstance(values.get("business_hours"), Mapping):
            values["business_hours"] = BusinessHours.from_dict(values["business_hours"])
        hours = values.get("business_hours")
        if isinstance(hours, BusinessHours) and "timezone" not in values:
            values["timezone"] = hours.timezone  # the daily cap counts days in the same zone
        if isinstance(values.get("retry_policy"), Mapping):
            values["retry_policy"] = RetryPolicy.from_dict(values["retry_policy"])
        if isinstance(values.get("agent"), Mapping):
            values["agent"] = AgentSettings(**values["agent"])
        if "schedule_type" in values:
            values["schedule_type"] = ScheduleType(values["schedule_type"])
        if "max_attempts" in values:  # pragma: no cover - guarded by EDITABLE_FIELDS
            values.pop("max_attempts")
        values["updated_at"] = self._now()
        new = attrs.evolve(campaign, **values)
        stored: Campaign = uow.save_campaign(new)
        return stored

    def delete(self, workspace_id: str, campaign_id: str) -> None:
        """Soft delete; an active campaign must be paused or terminated first."""
        now = self._now()
        with self.repository.transaction() as uow:
            campaign = self._get(uow, workspace_id, campaign_id)
            if campaign.status in (CampaignStatus.ACTIVE, CampaignStatus.SCHEDULED):
                raise InvalidTransition(campaign.status, "delete")
            uow.save_campaign(attrs.evolve(campaign, deleted_at=now, updated_at=now))

    # -- lifecycle ------------------------------------------------

    def start(self, workspace_id: str, campaign_id: str) -> Campaign:
        """Ready -> active (immediate) or scheduled (start in the future)."""
        now = self._now()
        out: list[DomainEvent] = []
        with self.repository.transaction() as uow:
            campaign = self._get(uow, workspace_id, campaign_id)
            if campaign.status is not CampaignStatus.READY:
                raise InvalidTransition(campaign.status, CampaignAction.START)
            problems = self.problems(campaign)
            if problems:
                raise CampaignValidationError(problems)
            action = CampaignAction.START
            if (
                campaign.schedule_type is ScheduleType.SCHEDULED
                and campaign.scheduled_start_at is not None
                and campaign.scheduled_start_at > now
            ):
                action = CampaignAction.SCHEDULE
            stored = self.core.transition(uow, campaign.id, action, now, out)
        self._emit(out)
        self._changed()
        return stored

    def pause(self, workspace_id: str, campaign_id: str) -> Campaign:
        return self._act(workspace_id, campaign_id, CampaignAction.PAUSE)

    def resume(self, workspace_id: str, campaign_id: str) -> Campaign:
        return self._act(workspace_id, campaign_id, CampaignAction.RESUME)

    def terminate(self, workspace_id: str, campaign_id: str) -> Campaign:
        """Cancel: pending recipients become skipped; calls in flight finish."""
        return self._act(workspace_id, campaign_id, CampaignAction.TERMINATE)

    def _act(self, workspace_id: str, campaign_id: str, action: CampaignAction) -> Campaign:
        now = self._now()
        out: list[DomainEvent] = []
        with self.repository.transaction(dispatch_lock=True) as uow:
            self._get(uow, workspace_id, campaign_id)
            stored = self.core.transition(
                uow, campaign_id, action, now, out, workspace_id=workspace_id
            )
        self._emit(out)
        self._changed()
        return stored

    # -- reading ------------------------------------------------

    def list_campaigns(
        self,
        workspace_id: str,
        *,
        status: CampaignStatus | str | Sequence[CampaignStatus | str] | None = None,
        search: str | None = None,
        page: int = 1,
        page_size: int = 20,
    ) -> Page:
        statuses = _statuses(status, CampaignStatus)
        with self.repository.transaction() as uow:
            result: Page = uow.list_campaigns(
                workspace_id,
                statuses=statuses,
                search=search,
                page=max(1, page),
                page_size=max(1, min(page_size, 500)),
            )
        return result

    def get(self, workspace_id: str, campaign_id: str) -> CampaignDetails:
        with self.repository.transaction() as uow:
            campaign = self._get(uow, workspace_id, campaign_id)
            stats = self._stats(uow, campaign)
        return CampaignDetails(campaign, stats)

    def stats(self, workspace_id: str, campaign_id: str) -> CampaignStats:
        return self.get(workspace_id, campaign_id).stats

    def _stats(self, uow: Any, campaign: Campaign) -> CampaignStats:
        c: CampaignCounters = campaign.counters
        outcomes: Mapping[CallOutcome, int] = uow.outcome_counts(campaign.id)
        count, total_seconds = uow.duration_totals(campaign.id)
        reached = sum(outcomes.values())
        answered = outcomes.get(CallOutcome.ANSWERED, 0)
        return CampaignStats(
            total=c.total,
            pending=c.pending,
            in_flight=c.in_flight,
            completed=c.completed,
            answered=c.answered,
            failed=c.failed,
            skipped=c.skipped,
            attempts=c.attempts,
            by_outcome={o.value: n for o, n in sorted(outcomes.items()) if n},
            answer_rate=(answered / reached) if reached else None,
            average_duration_seconds=(total_seconds / count) if count else None,
            estimated_completion_at=self._estimate(campaign),
        )

    def _estimate(self, campaign: Campaign) -> datetime | None:
        """When the campaign should finish at the pace seen so far (None: unknown)."""
        c = campaign.counters
        if campaign.status is CampaignStatus.COMPLETED or campaign.status.final:
            return campaign.completed_at
        if campaign.started_at is None or c.remaining == 0:
            return None
        now = self._now()
        elapsed = (now - campaign.started_at).total_seconds()
        done = c.finished
        if elapsed <= 0 or done == 0:
            return None
        rate = done / elapsed
        return now + timedelta(seconds=math.ceil(c.remaining / rate))

    def list_recipients(
        self,
        workspace_id: str,
        campaign_id: str,
        *,
        status: RecipientStatus | str | Sequence[RecipientStatus | str] | None = None,
        search: str | None = None,
        page: int = 1,
        page_size: int = 50,
    ) -> Page:
        statuses = _statuses(status, RecipientStatus)
        with self.repository.transaction() as uow:
            self._get(uow, workspace_id, campaign_id)
            result: Page = uow.list_recipients(
                campaign_id,
                statuses=statuses,
                search=search,
                page=max(1, page),
                page_size=max(1, min(page_size, 1000)),
            )
        return result

    def get_recipient(
        self, workspace_id: str, recipient_id: str, *, with_history: bool = True
    ) -> Recipient:
        with self.repository.transaction() as uow:
            recipient: Recipient = uow.get_recipient(recipient_id)
            if recipient.workspace_id != workspace_id:
                raise NotFound("recipient", recipient_id)
            if with_history:
                recipient = attrs.evolve(recipient, history=uow.attempts_for(recipient_id))
        return recipient

    # -- recipients ------------------------------------------------

    def add_recipient(
        self,
        workspace_id: str,
        campaign_id: str,
        phone_number: str,
        *,
        first_name: str | None = None,
        last_name: str | None = None,
        email: str | None = None,
        company: str | None = None,
        variables: Mapping[str, str] | None = None,
        priority: int = 0,
    ) -> Recipient:
        """Add one recipient; a bad number or a duplicate is refused with a clear error."""
        item = RecipientInput(
            phone_number, first_name, last_name, email, company, dict(variables or {}), priority
        )
        with self.repository.transaction() as uow:
            campaign = self._get(uow, workspace_id, campaign_id)
            self._check_addable(campaign)
            recipient = self._recipient(campaign, item, row=None)
            self._check_limit(campaign, 1)
            if uow.add_recipients([recipient]) == 0:
                raise DuplicateRecipient(campaign.id, mask_phone(recipient.phone))
            self._note_columns(uow, campaign, recipient.variables.keys())
            stored: Recipient = uow.get_recipient(recipient.id)
        self._changed()
        return stored

    def import_recipients(
        self,
        workspace_id: str,
        campaign_id: str,
        recipients: Iterable[RecipientInput | Mapping[str, Any]],
    ) -> ImportSummary:
        """Add many; duplicates (in the batch or already in the campaign) are counted, not
        stored twice; bad rows are reported and the good ones imported."""
        with self.repository.transaction() as uow:
            campaign = self._get(uow, workspace_id, campaign_id)
            self._check_addable(campaign)
            summary = self._add_inputs(uow, campaign, recipients)
        self._changed()
        return summary

    def import_csv(
        self,
        workspace_id: str,
        campaign_id: str,
        source: str | bytes | IO[bytes] | IO[str] | Any,
        *,
        default_region: str | None = None,
        batch_size: int = 1000,
    ) -> ImportReport:
        """Import a CSV file (see :func:`outdial.import_recipients_csv`) in one transaction:
        over the row limit nothing is stored."""
        now = self._now()
        with self.repository.transaction() as uow:
            campaign = self._get(uow, workspace_id, campaign_id)
            self._check_addable(campaign)
            report = import_recipients_csv(
                source,
                campaign_id=campaign.id,
                workspace_id=campaign.workspace_id,
                now=now,
                add_batch=uow.add_recipients,
                existing_count=campaign.counters.total,
                limit=campaign.max_recipients,
                default_region=default_region or campaign.default_region,
                new_id=self.new_id if self._custom_ids else None,
                batch_size=batch_size,
            )
            self._note_columns(uow, uow.get_campaign(campaign.id), report.custom_columns)
        self._changed()
        return report

    def _check_addable(self, campaign: Campaign) -> None:
        if campaign.status.final:
            raise InvalidTransition(campaign.status, "add recipients to")

    def _check_limit(self, campaign: Campaign, incoming: int) -> None:
        if campaign.counters.total + incoming > campaign.max_recipients:
            raise RowLimitExceeded(campaign.max_recipients, campaign.counters.total, incoming)

    def _recipient(self, campaign: Campaign, item: RecipientInput, row: int | None) -> Recipient:
        try:
            info = parse_phone(item.phone_number, campaign.default_region)
        except InvalidPhoneNumber as exc:
            raise InvalidPhoneNumber(exc.text, exc.reason, row=row, column="phone_number") from None
        now = self._now()
        return Recipient(
            id=self.new_id(),
            campaign_id=campaign.id,
            workspace_id=campaign.workspace_id,
            phone=info.e164,
            created_at=now,
            updated_at=now,
            first_name=item.first_name,
            last_name=item.last_name,
            email=item.email,
            company=item.company,
            variables=item.variables,
            priority=item.priority,
            time_zones=info.time_zones,
        )

    def _add_inputs(
        self,
        uow: Any,
        campaign: Campaign,
        items: Iterable[RecipientInput | Mapping[str, Any]],
    ) -> ImportSummary:
        recipients: list[Recipient] = []
        problems: list[Problem] = []
        seen: set[str] = set()
        duplicates = 0
        for index, raw in enumerate(items):
            try:
                item = raw if isinstance(raw, RecipientInput) else _input_from_mapping(raw)
                recipient = self._recipient(campaign, item, row=index)
            except InvalidPhoneNumber as exc:
                problems.append(Problem(f"recipients[{index}].phone_number", exc.reason))
                continue
            except (TypeError, ValueError) as exc:
                problems.append(Problem(f"recipients[{index}]", str(exc)))
                continue
            if recipient.phone in seen:
                duplicates += 1
                continue
            seen.add(recipient.phone)
            recipients.append(recipient)
        self._check_limit(campaign, len(recipients))
        inserted = uow.add_recipients(recipients) if recipients else 0
        duplicates += len(recipients) - inserted
        columns: set[str] = set()
        for r in recipients:
            columns.update(r.variables.keys())
        self._note_columns(uow, uow.get_campaign(campaign.id), columns)
        return ImportSummary(inserted, duplicates, tuple(problems))

    def _note_columns(self, uow: Any, campaign: Campaign, columns: Iterable[str]) -> None:
        new = [c for c in columns if c not in campaign.csv_column_headers]
        if new:
            uow.save_campaign(
                attrs.evolve(
                    campaign,
                    csv_column_headers=(*campaign.csv_column_headers, *sorted(set(new))),
                )
            )

    # -- calls ------------------------------------------------

    def test_call(self, workspace_id: str, campaign_id: str, phone_number: str) -> Attempt:
        """Place one test call with the campaign's agent; the campaign's counters are
        left alone. Returns the recorded attempt (with the provider's call id)."""
        now = self._now()
        with self.repository.transaction() as uow:
            campaign = self._get(uow, workspace_id, campaign_id)
            problems = self.agent_problems(campaign.agent)
            if problems:
                raise CampaignValidationError(problems)
            info = parse_phone(phone_number, campaign.default_region)
            attempt_id = self.new_id()
            attempt = Attempt(
                id=attempt_id,
                campaign_id=campaign.id,
                recipient_id=f"test:{attempt_id}",
                workspace_id=campaign.workspace_id,
                number=1,
                phone=info.e164,
                created_at=now,
                provider=campaign.agent.provider,
                worker_id=self.core.worker_id,
                test_call=True,
            )
            uow.add_attempt(attempt)
            probe = Recipient(
                id=attempt.recipient_id,
                campaign_id=campaign.id,
                workspace_id=campaign.workspace_id,
                phone=info.e164,
                created_at=now,
                time_zones=info.time_zones,
            )
            request = build_dial_request(campaign, probe, attempt)
        provider = self._provider(campaign.agent.provider)
        claim = Claim(attempt, request, attempt.provider)
        try:
            placed = provider.place_call(request)
        except ProviderError as exc:
            self.core.record_dial_error(self._now(), claim, exc)
            raise
        self.core.record_placed(self._now(), claim, placed)
        with self.repository.transaction() as uow:
            stored = uow.get_attempt(attempt.id)
        return stored if stored is not None else attempt

    def _provider(self, name: str | None) -> CallProvider:
        providers = self.providers
        if providers is None:
            raise ProviderError("no provider configured on the service", provider=name or "")
        if isinstance(providers, Mapping):
            if name is not None and name in providers:
                return providers[name]
            raise ProviderError(f"no provider configured for {name!r}", provider=name or "")
        return providers

    def apply_event(self, event: CallEvent) -> EventResult:
        """Apply a provider event (from a verified webhook) exactly once."""
        result = self.core.apply_event(self._now(), event)
        self._changed()
        return result

    def apply_events(self, events: Sequence[CallEvent]) -> list[EventResult | Exception]:
        """Apply provider events (from verified webhooks) in order in one transaction,
        each exactly once: :meth:`DialerCore.apply_events` at one ``now``.

        One item per event, in order: its result, or the exception applying it on
        its own raised (e.g. :class:`~outdial.errors.StaleClaim`), returned rather
        than raised so the other events' results are not lost.
        """
        results = self.core.apply_events(self._now(), events)
        self._changed()
        return results

    # -- suppression ------------------------------------------------

    def suppress(self, workspace_id: str, phone_number: str, reason: str = "do not call") -> str:
        """Add a number to the workspace's do-not-call list; returns its E.164 form."""
        e164 = parse_phone(phone_number).e164
        with self.repository.transaction() as uow:
            uow.suppress(workspace_id, e164, reason, self._now())
        return e164

    def unsuppress(self, workspace_id: str, phone_number: str) -> None:
        e164 = parse_phone(phone_number).e164
        with self.repository.transaction() as uow:
            uow.unsuppress(workspace_id, e164)

    def attempts(self, workspace_id: str, recipient_id: str) -> list[Attempt]:
        return list(self.get_recipient(workspace_id, recipient_id).history)


def _input_from_mapping(data: Mapping[str, Any]) -> RecipientInput:
    phone = data.get("phone_number") or data.get("phone")
    if not phone:
        raise ValueError("phone_number is required")
    known = {"phone_number", "phone", "first_name", "last_name", "email", "company", "priority"}
    variables = dict(data.get("variables") or {})
    variables.update(
        {str(k): str(v) for k, v in data.items() if k not in known and k != "variables"}
    )
    return RecipientInput(
        phone_number=str(phone),
        first_name=data.get("first_name"),
        last_name=data.get("last_name"),
        email=data.get("email"),
        company=data.get("company"),
        variables=variables,
        priority=int(data.get("priority") or 0),
    )


def _statuses(value: Any, enum_type: Any) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, enum_type)):
        return (enum_type(value),)
    return tuple(enum_type(v) for v in value)

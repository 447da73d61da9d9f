"""Campaigns and their lifecycle.

The campaign state machine is a transition table, :data:`TRANSITIONS`, from
``(status, action)`` to the next status, as in the seeds' section 9.2 (plus
``expire``, ``complete`` from paused and ``terminate`` of a scheduled campaign).
Everything that moves a campaign goes through :meth:`Campaign.apply`, which
refuses an action the table does not allow with :class:`InvalidTransition`.
The docs' diagram is drawn from the same table by :func:`mermaid_diagram`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

import attrs

from outdial._attrs import replace
from outdial._time import require_aware
from outdial.calendar import BusinessHours
from outdial.errors import ConfigurationError, InvalidTransition
from outdial.recipient import RecipientStatus
from outdial.retry import RetryPolicy

__all__ = [
    "TRANSITIONS",
    "AgentSettings",
    "Campaign",
    "CampaignAction",
    "CampaignCounters",
    "CampaignStatus",
    "ScheduleType",
    "mermaid_diagram",
    "next_status",
]


class CampaignStatus(str, enum.Enum):
    DRAFT = "draft"
    READY = "ready"
    SCHEDULED = "scheduled"
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        """Completed and cancelled campaigns never move again."""
        return self in (CampaignStatus.COMPLETED, CampaignStatus.CANCELLED)

    @property
    def editable(self) -> bool:
        """Only drafts and ready campaigns may be updated."""
        return self in (CampaignStatus.DRAFT, CampaignStatus.READY)

    def __str__(self) -> str:
        return self.value


class CampaignAction(str, enum.Enum):
    FINALIZE = "finalize"  # draft -> ready (the wizard is complete)
    START = "start"  # ready -> active (immediate)
    SCHEDULE = "schedule"  # ready -> scheduled (start at scheduled_start_at)
    ACTIVATE = "activate"  # scheduled -> active (engine: start time reached)
    PAUSE = "pause"
    RESUME = "resume"
    TERMINATE = "terminate"  # pending recipients become skipped
    COMPLETE = "complete"  # engine: nothing left to dial
    EXPIRE = "expire"  # engine: expiry reached; pending recipients skipped

    def __str__(self) -> str:
        return self.value


class ScheduleType(str, enum.Enum):
    IMMEDIATE = "immediate"
    SCHEDULED = "scheduled"

    def __str__(self) -> str:
        return self.value


_S = CampaignStatus
_A = CampaignAction

#: The campaign state machine: ``(status, action) -> next status``.
TRANSITIONS: Mapping[tuple[CampaignStatus, CampaignAction], CampaignStatus] = MappingProxyType(
    {
        (_S.DRAFT, _A.FINALIZE): _S.READY,
        (_S.READY, _A.START): _S.ACTIVE,
        (_S.READY, _A.SCHEDULE): _S.SCHEDULED,
        (_S.SCHEDULED, _A.ACTIVATE): _S.ACTIVE,
        (_S.ACTIVE, _A.PAUSE): _S.PAUSED,
        (_S.PAUSED, _A.RESUME): _S.ACTIVE,
        (_S.ACTIVE, _A.COMPLETE): _S.COMPLETED,
        (_S.PAUSED, _A.COMPLETE): _S.COMPLETED,
        (_S.ACTIVE, _A.TERMINATE): _S.CANCELLED,
        (_S.PAUSED, _A.TERMINATE): _S.CANCELLED,
        (_S.SCHEDULED, _A.TERMINATE): _S.CANCELLED,
        (_S.SCHEDULED, _A.EXPIRE): _S.CANCELLED,
        (_S.ACTIVE, _A.EXPIRE): _S.CANCELLED,
        (_S.PAUSED, _A.EXPIRE): _S.CANCELLED,
    }
)


def next_status(status: CampaignStatus, action: CampaignAction) -> CampaignStatus:
    """The status ``action`` leads to from ``status``; ``InvalidTransition`` if none."""
    try:
        return TRANSITIONS[(status, action)]
    except KeyError:
        raise InvalidTransition(status, action) from None


def allowed_actions(status: CampaignStatus) -> frozenset[CampaignAction]:
    """Every action the table allows from ``status``."""
    return frozenset(a for (s, a) in TRANSITIONS if s is status)


def mermaid_diagram() -> str:
    """A Mermaid state diagram drawn from :data:`TRANSITIONS`."""
    lines = ["stateDiagram-v2", "    [*] --> draft"]
    for (src, action), dst in TRANSITIONS.items():
        lines.append(f"    {src.value} --> {dst.value}: {action.value}")
    lines += ["    completed --> [*]", "    cancelled --> [*]"]
    return "\n".join(lines)


def _frozen_str_map(value: Mapping[str, Any] | None) -> Mapping[str, str]:
    return MappingProxyType({str(k): "" if v is None else str(v) for k, v in (value or {}).items()})


@attrs.frozen
class AgentSettings:
    """Who speaks on the call and through which provider.

    ``provider`` names the adapter (``"vapi"``, ``"twilio"``, ``"retell"``,
    ``"elevenlabs"``, ``"exotel"``, ``"simulated"``...); ``external_agent_id``
    is the provider's assistant/agent id; ``phone_number`` the caller id
    (E.164) and ``phone_number_id`` the provider's id for it where one is used.
    """

    agent_id: str | None = None
    provider: str | None = None
    external_agent_id: str | None = None
    phone_number: str | None = None
    phone_number_id: str | None = None
    fallback_provider: str | None = None
    prompt_template: str | None = None
    greeting_template: str | None = None
    options: Mapping[str, str] = attrs.field(
        factory=lambda: MappingProxyType({}), converter=_frozen_str_map
    )


@attrs.frozen
class CampaignCounters:
    """Recipient counts by status, kept equal to the recipients' states (invariant 8)."""

    total: int = 0
    pending: int = 0
    queued: int = 0
    calling: int = 0
    completed: int = 0
    failed: int = 0
    skipped: int = 0
    answered: int = 0  # recipients whose final outcome is answered
    attempts: int = 0  # attempts placed (test calls excluded)

    @property
    def in_flight(self) -> int:
        return self.queued + self.calling

    @property
    def finished(self) -> int:
        return self.completed + self.failed + self.skipped

    @property
    def remaining(self) -> int:
        """Recipients not yet in a final state."""
        return self.pending + self.queued + self.calling

    def moved(
        self,
        old: RecipientStatus | None,
        new: RecipientStatus | None,
        *,
        answered_delta: int = 0,
        attempts_delta: int = 0,
    ) -> CampaignCounters:
        """Counters after one recipient moved from ``old`` to ``new`` (None = absent)."""
        changes: dict[str, int] = {}
        if old is not None:
            changes[old.value] = getattr(self, old.value) - 1
        if new is not None:
            changes[new.value] = changes.get(new.value, getattr(self, new.value)) + 1
        total = self.total + (new is not None) - (old is not None)
        return replace(
            self,
            total=total,
            answered=self.answered + answered_delta,
            attempts=self.attempts + attempts_delta,
            **changes,
        )


def _positive(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and value <= 0:
        raise ConfigurationError(attribute.name, value, "must be positive")


def _aware_or_none(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        require_aware(value, attribute.name)


def _str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen
class Campaign:
    """An outbound calling campaign (the library-relevant fields of the seeds)."""

    id: str
    workspace_id: str
    created_at: datetime = attrs.field(validator=_aware_or_none)
    name: str = ""
    description: str = ""
    status: CampaignStatus = CampaignStatus.DRAFT
    agent: AgentSettings = AgentSettings()
    schedule_type: ScheduleType = ScheduleType.IMMEDIATE
    scheduled_start_at: datetime | None = attrs.field(default=None, validator=_aware_or_none)
    expires_at: datetime | None = attrs.field(default=None, validator=_aware_or_none)
    timezone: str = "UTC"
    business_hours: BusinessHours | None = None
    rule_set: str | None = None
    default_region: str | None = None
    concurrency_limit: int = attrs.field(default=1, validator=_positive)
    calls_per_minute: float | None = attrs.field(default=None, validator=_positive)
    min_spacing: timedelta = timedelta(0)
    daily_cap: int | None = attrs.field(default=None, validator=_positive)
    retry_policy: RetryPolicy = RetryPolicy()
    prompt_variables: Mapping[str, str] = attrs.field(
        factory=lambda: MappingProxyType({}), converter=_frozen_str_map
    )
    csv_column_headers: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    max_recipients: int = attrs.field(default=10_000, validator=_positive)
    created_by: str | None = None
    counters: CampaignCounters = CampaignCounters()
    updated_at: datetime | None = attrs.field(default=None, validator=_aware_or_none)
    started_at: datetime | None = attrs.field(default=None, validator=_aware_or_none)
    completed_at: datetime | None = attrs.field(default=None, validator=_aware_or_none)
    deleted_at: datetime | None = attrs.field(default=None, validator=_aware_or_none)
    status_reason: str | None = None
    version: int = 0

    @property
    def max_attempts(self) -> int:
        return self.retry_policy.max_attempts

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None

    def can(self, action: CampaignAction) -> bool:
        return (self.status, action) in TRANSITIONS

    def apply(self, action: CampaignAction, now: datetime, reason: str | None = None) -> Campaign:
        """The campaign after ``action`` at ``now``; ``InvalidTransition`` if not allowed.

        Sets ``started_at`` the first time it becomes active and
        ``completed_at`` when it reaches a final state.
        """
        require_aware(now, "now")
        if self.deleted:
            raise InvalidTransition("deleted", action)
        status = next_status(self.status, action)
        changes: dict[str, Any] = {"status": status, "updated_at": now, "status_reason": reason}
        if status is CampaignStatus.ACTIVE and self.started_at is None:
            changes["started_at"] = now
        if status.final:
            changes["completed_at"] = now
        return attrs.evolve(self, **changes)

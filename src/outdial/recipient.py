"""Recipients, their lifecycle and their attempt history.

A recipient moves ``pending -> queued -> calling -> completed | failed |
skipped``; a retry sends it back to ``pending`` with a due time. The allowed
moves are the table :data:`RECIPIENT_TRANSITIONS`; :meth:`Recipient.moved_to`
refuses any other with :class:`~outdial.errors.InvalidTransition`, which is how
a late or out-of-order event can never move a recipient backwards.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

import attrs

from outdial._attrs import replace
from outdial.errors import InvalidTransition
from outdial.outcomes import CallOutcome

__all__ = [
    "RECIPIENT_TRANSITIONS",
    "Attempt",
    "AttemptStatus",
    "Recipient",
    "RecipientStatus",
    "check_move",
]


class RecipientStatus(str, enum.Enum):
    """Where a recipient is in its lifecycle."""

    PENDING = "pending"  # waiting to be dialled (now or at ``next_attempt_at``)
    QUEUED = "queued"  # claimed: an attempt is recorded, the provider not yet confirmed
    CALLING = "calling"  # the provider accepted the call; it rings or talks
    COMPLETED = "completed"  # final: the last call connected (answered/voicemail/opted out)
    FAILED = "failed"  # final: could not be reached (budget spent or not retryable)
    SKIPPED = "skipped"  # final: never dialled again (terminated, expired, suppressed)

    @property
    def final(self) -> bool:
        return self in _FINAL

    @property
    def in_flight(self) -> bool:
        return self in (RecipientStatus.QUEUED, RecipientStatus.CALLING)

    def __str__(self) -> str:
        return self.value


_FINAL = frozenset({RecipientStatus.COMPLETED, RecipientStatus.FAILED, RecipientStatus.SKIPPED})

_R = RecipientStatus
#: Every move a recipient may make. Anything else is refused.
RECIPIENT_TRANSITIONS: frozenset[tuple[RecipientStatus, RecipientStatus]] = frozenset(
    {
        (_R.PENDING, _R.QUEUED),  # claimed by a dialer
        (_R.PENDING, _R.SKIPPED),  # terminated / expired / suppressed / no window
        (_R.PENDING, _R.FAILED),  # e.g. caps make it impossible
        (_R.QUEUED, _R.CALLING),  # provider accepted
        (_R.QUEUED, _R.PENDING),  # provider refused retryably, or never placed (reconciled)
        (_R.QUEUED, _R.COMPLETED),  # result arrived before the placement was confirmed
        (_R.QUEUED, _R.FAILED),
        (_R.CALLING, _R.PENDING),  # retry scheduled
        (_R.CALLING, _R.COMPLETED),
        (_R.CALLING, _R.FAILED),
        (_R.QUEUED, _R.SKIPPED),  # a retry would be due but the campaign has ended
        (_R.CALLING, _R.SKIPPED),
    }
)


class AttemptStatus(str, enum.Enum):
    """The life of one call attempt."""

    DIALING = "dialing"  # recorded before the provider was asked; fate unknown until confirmed
    PLACED = "placed"  # the provider accepted it (external call id known)
    ENDED = "ended"  # a final result was applied (exactly once)

    def __str__(self) -> str:
        return self.value


#: the ``variables`` of every recipient that has none (one read-only object, not one each:
#: less memory, and fewer objects for the garbage collector to walk)
_NO_VARIABLES: Mapping[str, str] = MappingProxyType({})


def _frozen_map(value: Mapping[str, Any] | None) -> Mapping[str, str]:
    if not value:
        return _NO_VARIABLES
    return MappingProxyType({str(k): "" if v is None else str(v) for k, v in value.items()})


@attrs.frozen
class Attempt:
    """One call attempt: an insert-only history row, updated only forwards."""

    id: str
    campaign_id: str
    recipient_id: str
    workspace_id: str
    number: int  # 1 for the first call
    phone: str
    created_at: datetime
    status: AttemptStatus = AttemptStatus.DIALING
    provider: str | None = None
    external_call_id: str | None = None
    placed_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    outcome: CallOutcome | None = None
    duration_seconds: float | None = None
    error: str | None = None
    last_sequence: int = -1  # highest provider event sequence applied
    worker_id: str | None = None
    claim_token: int = 0  # fencing token: a stale worker cannot overwrite a newer claim
    test_call: bool = False

    @property
    def in_flight(self) -> bool:
        return self.status is not AttemptStatus.ENDED


def _str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _attempt_tuple(value: Iterable[Attempt]) -> tuple[Attempt, ...]:
    return tuple(value)


@attrs.frozen
class Recipient:
    """Somebody a campaign calls."""

    id: str
    campaign_id: str
    workspace_id: str
    phone: str  # E.164
    created_at: datetime
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    company: str | None = None
    variables: Mapping[str, str] = attrs.field(
        factory=lambda: MappingProxyType({}), converter=_frozen_map
    )
    priority: int = 0  # higher first; ties in insertion order
    seq: int = 0  # insertion order within the campaign (assigned by the repository)
    time_zones: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    status: RecipientStatus = RecipientStatus.PENDING
    outcome: CallOutcome | None = None
    attempts: int = 0
    next_attempt_at: datetime | None = None  # None: due as soon as permitted
    last_attempt_at: datetime | None = None
    last_retry_delay_seconds: float | None = None
    duration_seconds: float | None = None
    external_call_id: str | None = None
    error: str | None = None
    updated_at: datetime | None = None
    history: tuple[Attempt, ...] = attrs.field(default=(), converter=_attempt_tuple, eq=False)

    @property
    def name(self) -> str:
        """First and last name joined by a space (either alone when the other is empty)."""
        first, last = self.first_name, self.last_name
        if first and last:
            return f"{first} {last}"
        return first or last or ""

    def template_variables(self) -> dict[str, str]:
        """The placeholders this recipient fills: standard fields then custom columns."""
        first, last, phone = self.first_name, self.last_name, self.phone
        values = {
            "first_name": first or "",
            "last_name": last or "",
            "name": f"{first} {last}" if first and last else first or last or "",
            "email": self.email or "",
            "company": self.company or "",
            "phone": phone,
            "phone_number": phone,
        }
        if self.variables:
            values.update(self.variables)
        return values

    def moved_to(self, status: RecipientStatus, **changes: Any) -> Recipient:
        """This recipient in ``status``; ``InvalidTransition`` for a move the table forbids."""
        check_move(self, status)
        return replace(self, status=status, **changes)


def check_move(recipient: Recipient, status: RecipientStatus) -> None:
    """``InvalidTransition`` unless the table allows ``recipient`` to move to ``status``
    (what :meth:`Recipient.moved_to` checks, for callers that copy with a fixed-shape
    :func:`~outdial._attrs.copier`)."""
    if (recipient.status, status) not in RECIPIENT_TRANSITIONS:
        raise InvalidTransition(recipient.status, f"move to {status.value}", kind="recipient")

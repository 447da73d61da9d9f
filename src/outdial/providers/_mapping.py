"""Outcome mapping shared by the providers: the :class:`Mapped` value, the
constants the tables are written with, and the one place unknown values go.

Each provider's table lives in its own module; an unknown raw value (a status
or ended reason the table does not know) becomes ``error``, retryable, with the
raw value kept in ``CallEvent.raw_status``, and is logged once per distinct
value per provider (a module-level seen set) so a new provider value shows up
in the logs without flooding them.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs
import structlog

from outdial.outcomes import CallOutcome
from outdial.ports import CallEvent, CallStatus

__all__ = [
    "ANSWERED",
    "BUSY",
    "DECLINED",
    "ERROR_FINAL",
    "ERROR_RETRY",
    "INVALID_NUMBER",
    "IN_PROGRESS",
    "NO_ANSWER",
    "QUEUED",
    "RINGING",
    "VOICEMAIL",
    "Mapped",
    "unknown_value",
]

log = structlog.get_logger("outdial.providers")

_seen: set[tuple[str, str, str]] = set()
_seen_lock = threading.Lock()


@attrs.frozen
class Mapped:
    """What one raw provider value means: call status, outcome (final only) and
    whether the provider's view is that trying again may help."""

    status: CallStatus
    outcome: CallOutcome | None = None
    retryable: bool | None = None

    @property
    def final(self) -> bool:
        return self.status is CallStatus.ENDED

    def event(
        self,
        provider: str,
        *,
        raw_status: str | None,
        external_call_id: str | None = None,
        attempt_id: str | None = None,
        sequence: int | None = None,
        occurred_at: datetime | None = None,
        duration_seconds: float | None = None,
        error: str | None = None,
        event_id: str | None = None,
        raw: Mapping[str, Any] | None = None,
    ) -> CallEvent:
        """A :class:`CallEvent` carrying this meaning and the given facts."""
        return CallEvent(
            provider=provider,
            status=self.status,
            external_call_id=external_call_id,
            attempt_id=attempt_id,
            outcome=self.outcome,
            retryable=self.retryable,
            sequence=sequence,
            occurred_at=occurred_at,
            duration_seconds=duration_seconds if self.final else None,
            raw_status=raw_status,
            error=error,
            event_id=event_id,
            raw=raw or {},
        )


QUEUED = Mapped(CallStatus.QUEUED)
RINGING = Mapped(CallStatus.RINGING)
IN_PROGRESS = Mapped(CallStatus.IN_PROGRESS)

_E = CallStatus.ENDED
ANSWERED = Mapped(_E, CallOutcome.ANSWERED, False)
VOICEMAIL = Mapped(_E, CallOutcome.VOICEMAIL, True)
NO_ANSWER = Mapped(_E, CallOutcome.NO_ANSWER, True)
BUSY = Mapped(_E, CallOutcome.BUSY, True)
INVALID_NUMBER = Mapped(_E, CallOutcome.INVALID_NUMBER, False)
DECLINED = Mapped(_E, CallOutcome.DECLINED, False)
ERROR_RETRY = Mapped(_E, CallOutcome.ERROR, True)
ERROR_FINAL = Mapped(_E, CallOutcome.ERROR, False)


def unknown_value(provider: str, field: str, raw: str) -> Mapped:
    """The safe meaning of a value no table knows: error, retryable. Logged once
    per (provider, field, value)."""
    key = (provider, field, raw[:200])
    with _seen_lock:
        first = key not in _seen
        _seen.add(key)
    if first:
        log.warning("unknown_provider_value", provider=provider, field=field, value=raw[:200])
    return ERROR_RETRY

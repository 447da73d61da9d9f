"""A scripted call provider for tests (in the spirit of ``httpx.MockTransport``).

:class:`FakeProvider` implements :class:`~outdial.ports.CallProvider` (and
:class:`~outdial.ports.EventSource`); :meth:`FakeProvider.as_async` gives an
:class:`~outdial.ports.AsyncCallProvider` over the same state.

Tests say what successive calls to a number do with :meth:`FakeProvider.script`:

* a :class:`~outdial.outcomes.CallOutcome` - the call is accepted and, when it
  ends, ends with that outcome;
* a :class:`~outdial.errors.ProviderError` instance - ``place_call`` raises it
  and no call exists;
* :class:`UnknownFate` - ``place_call`` raises a timeout-like error with
  ``placed=None``; with an ``outcome`` the call was placed all the same (for
  reconciliation tests), without one it was not.

Unscripted calls end with ``default_outcome`` (answered). Calls end when the
test says so (:meth:`~FakeProvider.end_call`, :meth:`~FakeProvider.complete`,
which return the final :class:`~outdial.ports.CallEvent` to feed to the
service or runner), or by themselves ``auto_complete_after`` their placing
when a clock is given; their final events are then handed out by
:meth:`~FakeProvider.due_events`.

Everything the provider was asked is recorded: :attr:`~FakeProvider.calls`
(every :class:`~outdial.ports.DialRequest`, refused ones too),
:attr:`~FakeProvider.placed`, :attr:`~FakeProvider.cancelled` and
:attr:`~FakeProvider.fetches`.
"""

from __future__ import annotations

import heapq
import threading
from collections import deque
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone

import attrs

from outdial._async_face import AsyncFace
from outdial._time import require_aware
from outdial.errors import (
    ConfigurationError,
    NotFound,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
)
from outdial.outcomes import CallOutcome
from outdial.ports import CallEvent, CallStatus, Clock, DialRequest, PlacedCall

__all__ = ["AsyncFakeProvider", "FakeProvider", "ScriptStep", "UnknownFate"]


@attrs.frozen
class UnknownFate:
    """A script step: ``place_call`` raises ``error`` (by default a
    :class:`~outdial.errors.ProviderUnavailable` timeout with ``placed=None``).

    With an ``outcome`` the provider did place the call: it is recorded,
    :meth:`FakeProvider.fetch_call` reports it and it ends with that outcome.
    Without one, no call exists and ``fetch_call`` returns ``None``.
    """

    outcome: CallOutcome | None = None
    error: ProviderError | None = None


#: What one scripted call does.
ScriptStep = CallOutcome | ProviderError | UnknownFate


class _FakeCall:
    __slots__ = ("final", "outcome", "placed", "placed_at", "request", "status")

    def __init__(
        self,
        request: DialRequest,
        placed: PlacedCall,
        outcome: CallOutcome,
        placed_at: datetime | None,
    ) -> None:
        self.request = request
        self.placed = placed
        self.outcome = outcome
        self.placed_at = placed_at
        self.status = CallStatus.QUEUED
        self.final: CallEvent | None = None


class FakeProvider:
    """A scripted :class:`~outdial.ports.CallProvider` for tests.

    ``clock`` (anything with ``now()``) stamps ``occurred_at`` on events and
    is required by ``auto_complete_after``. Connected outcomes (answered,
    voicemail, opted out) report ``talk_seconds`` as their duration unless told
    otherwise; the others report 0. Thread-safe.

    >>> from outdial.errors import ProviderRejected
    >>> fake = FakeProvider()
    >>> _ = fake.script("+14155550100", CallOutcome.BUSY, CallOutcome.ANSWERED)
    >>> _ = fake.script("+14155550199", ProviderRejected("not in service"))
    """

    def __init__(
        self,
        name: str = "fake",
        clock: Clock | None = None,
        *,
        default_outcome: CallOutcome = CallOutcome.ANSWERED,
        auto_complete_after: timedelta | None = None,
        talk_seconds: float = 30.0,
    ) -> None:
        if auto_complete_after is not None:
            if clock is None:
                raise ConfigurationError(
                    "auto_complete_after", auto_complete_after, "needs a clock to count from"
                )
            if auto_complete_after < timedelta(0):
                raise ConfigurationError(
                    "auto_complete_after", auto_complete_after, "must not be negative"
                )
        if not isinstance(default_outcome, CallOutcome):
            raise ConfigurationError("default_outcome", default_outcome, "must be a CallOutcome")
        self.name = name
        self.clock = clock
        self.default_outcome = default_outcome
        self.auto_complete_after = auto_complete_after
        self.talk_seconds = talk_seconds
        #: When set, ``fetch_call`` raises it ("the provider cannot tell").
        self.fetch_error: ProviderError | None = None

        #: Every request ``place_call`` received, in order (refused ones too).
        self.calls: list[DialRequest] = []
        #: Calls that exist at the provider, by attempt id.
        self.placed: dict[str, PlacedCall] = {}
        #: External ids passed to ``cancel_call``, in order.
        self.cancelled: list[str] = []
        #: ``(attempt_id, external_call_id)`` of every ``fetch_call``, in order.
        self.fetches: list[tuple[str, str | None]] = []

        self._lock = threading.RLock()
        self._scripts: dict[str, deque[ScriptStep]] = {}
        self._records: dict[str, _FakeCall] = {}
        self._by_external: dict[str, _FakeCall] = {}
        # (due, tie, when it happens or None for "at once", event or attempt id to end)
        self._queue: list[tuple[datetime, int, datetime | None, CallEvent | str]] = []
        self._tie = 0

    def __repr__(self) -> str:
        return f"FakeProvider(name={self.name!r}, calls={len(self.calls)})"

    # -- scripting --------------------------------------------------------------------------

    def script(self, number: str, *steps: ScriptStep) -> FakeProvider:
        """Queue what the next calls to ``number`` (E.164, compared exactly with
        ``DialRequest.to``) do, one step per call. Returns the provider, so
        calls can be chained."""
        for position, step in enumerate(steps):
            if not isinstance(step, (CallOutcome, ProviderError, UnknownFate)):
                raise TypeError(
                    f"script step {position} for {number}: expected a CallOutcome, a "
                    f"ProviderError or UnknownFate, got {step!r}"
                )
        with self._lock:
            self._scripts.setdefault(number, deque()).extend(steps)
        return self

    def unused_script(self) -> Mapping[str, tuple[ScriptStep, ...]]:
        """Steps scripted but not used yet, by number (e.g. a mistyped number)."""
        with self._lock:
            return {number: tuple(steps) for number, steps in self._scripts.items() if steps}

    # -- CallProvider -----------------------------------------------------------------------

    def place_call(self, request: DialRequest) -> PlacedCall:
        """Record the request and do what the script says for its number."""
        with self._lock:
            self.calls.append(request)
            steps = self._scripts.get(request.to)
            step: ScriptStep = steps.popleft() if steps else self.default_outcome
            if isinstance(step, ProviderError):
                raise step
            if isinstance(step, UnknownFate):
                if step.outcome is not None:
                    self._accept(request, step.outcome)
                raise step.error or ProviderUnavailable(
                    "timed out waiting for the provider",
                    provider=self.name,
                    code="timeout",
                    placed=None,
                )
            return self._accept(request, step).placed

    def cancel_call(self, external_call_id: str) -> None:
        """Record the cancel; a call in progress ends with outcome ``error``
        (not retryable, ``error="cancelled"``). An unknown id raises
        :class:`~outdial.errors.ProviderRejected` (code ``not_found``)."""
        with self._lock:
            self.cancelled.append(external_call_id)
            record = self._by_external.get(external_call_id)
            if record is None:
                raise ProviderRejected(
                    f"no call {external_call_id!r}", provider=self.name, code="not_found"
                )
            if record.final is None:
                event = self._finish(
                    record, CallOutcome.ERROR, duration=0.0, retryable=False, error="cancelled"
                )
                if self.auto_complete_after is not None:
                    self._enqueue(event.occurred_at, event)

    def fetch_call(self, *, attempt_id: str, external_call_id: str | None) -> CallEvent | None:
        """What the provider knows: the final event of an ended call, the
        current status of a call in progress, ``None`` for a call that was never
        placed. Raises :attr:`fetch_error` when one is set."""
        with self._lock:
            self.fetches.append((attempt_id, external_call_id))
            if self.fetch_error is not None:
                raise self.fetch_error
            record = None
            if external_call_id is not None:
                record = self._by_external.get(external_call_id)
            if record is None:
                record = self._records.get(attempt_id)
            if record is None:
                return None
            if record.final is not None:
                return record.final
            return CallEvent(
                provider=self.name,
                status=record.status,
                external_call_id=record.placed.external_call_id,
                attempt_id=record.request.attempt_id,
                occurred_at=self._now(),
                raw_status=record.status.value,
            )

    # -- producing events -------------------------------------------------------------------

    def end_call(
        self,
        attempt_id: str,
        outcome: CallOutcome | None = None,
        *,
        duration: float | None = None,
        sequence: int | None = None,
        retryable: bool | None = None,
        error: str | None = None,
        occurred_at: datetime | None = None,
    ) -> CallEvent:
        """End the call of ``attempt_id`` and return its final event.

        ``outcome`` defaults to the scripted one, ``duration`` to
        ``talk_seconds`` for connected outcomes (0 otherwise), ``occurred_at``
        to the clock's now. Calling it again for a call that already ended
        leaves the call as it was and returns an event built from the first
        final event with the given changes: no changes give a duplicate webhook
        (same ``event_id``), another outcome or sequence a conflicting late
        one (its own ``event_id``). Unknown attempt ids raise
        :class:`~outdial.errors.NotFound`.
        """
        with self._lock:
            record = self._record(attempt_id)
            if record.final is None:
                return self._finish(
                    record,
                    outcome if outcome is not None else record.outcome,
                    duration=duration,
                    sequence=sequence,
                    retryable=retryable,
                    error=error,
                    occurred_at=occurred_at,
                )
            first = record.final
            again = first.outcome if outcome is None else outcome
            seq = first.sequence if sequence is None else sequence
            same = (again, seq) == (first.outcome, first.sequence)
            return attrs.evolve(
                first,
                event_id=first.event_id if same else f"{first.external_call_id}:{again}:{seq}",
                outcome=again,
                raw_status=first.raw_status if again is None else again.value,
                duration_seconds=first.duration_seconds if duration is None else duration,
                sequence=seq,
                retryable=first.retryable if retryable is None else retryable,
                error=first.error if error is None else error,
                occurred_at=first.occurred_at if occurred_at is None else occurred_at,
            )

    def progress_call(
        self,
        attempt_id: str,
        status: CallStatus = CallStatus.RINGING,
        *,
        sequence: int | None = None,
        occurred_at: datetime | None = None,
    ) -> CallEvent:
        """A progress event (``ringing`` / ``in_progress``) for a call; a call
        still in progress takes that status. For an ended call it builds the
        event without changing the call (a late, out-of-order webhook)."""
        if status is CallStatus.ENDED:
            raise ValueError("use end_call() for the final event of a call")
        with self._lock:
            record = self._record(attempt_id)
            if record.final is None:
                record.status = status
            return CallEvent(
                provider=self.name,
                status=status,
                external_call_id=record.placed.external_call_id,
                attempt_id=attempt_id,
                sequence=sequence,
                occurred_at=occurred_at if occurred_at is not None else self._now(),
                raw_status=status.value,
                event_id=_event_id(record.placed.external_call_id, status.value, sequence),
            )

    def complete(self, *attempt_ids: str) -> list[CallEvent]:
        """End the given calls (all calls in progress when none are given) with
        their scripted outcomes; return their final events in that order."""
        with self._lock:
            if attempt_ids:
                records = [self._record(a) for a in attempt_ids]
            else:
                records = [r for r in self._records.values() if r.final is None]
            return [self._finish(r, r.outcome) if r.final is None else r.final for r in records]

    def pending_calls(self) -> list[DialRequest]:
        """Requests of the calls placed and not ended yet, in placing order."""
        with self._lock:
            return [r.request for r in self._records.values() if r.final is None]

    def queue_event(self, event: CallEvent, *, at: datetime | None = None) -> None:
        """Have :meth:`due_events` hand out ``event`` once ``at`` is reached
        (at the next call when ``at`` is None), e.g. a duplicate or late webhook
        for a runner that collects events itself."""
        with self._lock:
            self._enqueue(None if at is None else require_aware(at, "queue_event(at)"), event)

    # -- EventSource --------------------------------------------------------------------------

    def next_event_at(self) -> datetime | None:
        """When the next queued event or automatic end is due (``None``:
        nothing is). An event queued without a time is due at once: that is
        reported as the clock's now (the earliest instant there is when the
        fake has no clock)."""
        with self._lock:
            queue = self._queue
            while queue and isinstance(queue[0][3], str) and self._ended(queue[0][3]):
                heapq.heappop(queue)
            if not queue:
                return None
            due, _, at, _ = queue[0]
            if at is None:
                now = self._now()
                return now if now is not None else due
            return at

    def due_events(self, now: datetime) -> list[CallEvent]:
        """Final events of calls that ended by themselves (``auto_complete_after``)
        by ``now``, and queued events due by ``now``, in time order."""
        require_aware(now, "FakeProvider.due_events")
        out: list[CallEvent] = []
        with self._lock:
            queue = self._queue
            while queue and queue[0][0] <= now:
                _, _, at, item = heapq.heappop(queue)
                if isinstance(item, CallEvent):
                    out.append(item)
                    continue
                record = self._records[item]
                if record.final is None:
                    out.append(self._finish(record, record.outcome, occurred_at=at))
        return out

    def as_async(self) -> AsyncFakeProvider:
        """An :class:`~outdial.ports.AsyncCallProvider` sharing this fake's state."""
        return AsyncFakeProvider(self)

    # -- internals --------------------------------------------------------------------------

    def _now(self) -> datetime | None:
        return self.clock.now() if self.clock is not None else None

    def _accept(self, request: DialRequest, outcome: CallOutcome) -> _FakeCall:
        external_id = f"{self.name}-{len(self._records) + 1}"
        placed = PlacedCall(self.name, external_id, CallStatus.QUEUED)
        placed_at = self._now()
        record = _FakeCall(request, placed, outcome, placed_at)
        self._records[request.attempt_id] = record
        self._by_external[external_id] = record
        self.placed[request.attempt_id] = placed
        if self.auto_complete_after is not None and placed_at is not None:
            self._enqueue(placed_at + self.auto_complete_after, request.attempt_id)
        return record

    def _record(self, attempt_id: str) -> _FakeCall:
        record = self._records.get(attempt_id)
        if record is None:
            raise NotFound("call", attempt_id)
        return record

    def _ended(self, attempt_id: str) -> bool:
        return self._records[attempt_id].final is not None

    def _enqueue(self, at: datetime | None, item: CallEvent | str) -> None:
        self._tie += 1
        heapq.heappush(self._queue, (_AT_ONCE if at is None else at, self._tie, at, item))

    def _finish(
        self,
        record: _FakeCall,
        outcome: CallOutcome,
        *,
        duration: float | None = None,
        sequence: int | None = None,
        retryable: bool | None = None,
        error: str | None = None,
        occurred_at: datetime | None = None,
    ) -> CallEvent:
        if duration is None:
            duration = self.talk_seconds if outcome.connected else 0.0
        external_id = record.placed.external_call_id
        event = CallEvent(
            provider=self.name,
            status=CallStatus.ENDED,
            external_call_id=external_id,
            attempt_id=record.request.attempt_id,
            outcome=outcome,
            retryable=retryable,
            sequence=sequence,
            occurred_at=occurred_at if occurred_at is not None else self._now(),
            duration_seconds=duration,
            raw_status=outcome.value,
            error=error,
            event_id=_event_id(external_id, "ended", sequence),
        )
        record.outcome = outcome
        record.status = CallStatus.ENDED
        record.final = event
        return event


_AT_ONCE = datetime.min.replace(tzinfo=timezone.utc)  # sorts before any real instant


def _event_id(external_id: str, status: str, sequence: int | None) -> str:
    return f"{external_id}:{status}" if sequence is None else f"{external_id}:{sequence}"


class AsyncFakeProvider(AsyncFace[FakeProvider]):
    """The :class:`~outdial.ports.AsyncCallProvider` face of a
    :class:`FakeProvider` (made by :meth:`FakeProvider.as_async`); scripting,
    records and events are shared with it through :attr:`sync`."""

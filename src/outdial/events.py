"""Domain events: every state change the library makes, as values.

They are delivered to an :class:`~outdial.ports.EventSink`. :class:`EventBus`
is a ready-made sink that fans events out to subscribers, including async
iterators a web service can forward to websockets or server-sent events.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

import attrs

from outdial.campaign import CampaignCounters, CampaignStatus
from outdial.outcomes import CallOutcome
from outdial.recipient import RecipientStatus

__all__ = [
    "CallEnded",
    "CallPlaced",
    "CampaignStatusChanged",
    "DomainEvent",
    "EventBus",
    "ProgressUpdated",
    "RecipientSkipped",
    "RetryScheduled",
    "Subscription",
]


@attrs.frozen
class CampaignStatusChanged:
    campaign_id: str
    workspace_id: str
    old: CampaignStatus
    new: CampaignStatus
    at: datetime
    reason: str | None = None
    kind: str = "campaign_status_changed"


@attrs.frozen
class CallPlaced:
    campaign_id: str
    workspace_id: str
    recipient_id: str
    attempt_id: str
    attempt_number: int
    phone_masked: str
    provider: str | None
    at: datetime
    test_call: bool = False
    kind: str = "call_placed"


@attrs.frozen
class CallEnded:
    campaign_id: str
    workspace_id: str
    recipient_id: str
    attempt_id: str
    outcome: CallOutcome | None
    recipient_status: RecipientStatus
    duration_seconds: float | None
    at: datetime
    error: str | None = None
    test_call: bool = False
    kind: str = "call_ended"


@attrs.frozen
class RetryScheduled:
    campaign_id: str
    workspace_id: str
    recipient_id: str
    due_at: datetime
    reason: str
    at: datetime
    kind: str = "retry_scheduled"


@attrs.frozen
class RecipientSkipped:
    campaign_id: str
    workspace_id: str
    recipient_id: str
    reason: str
    at: datetime
    kind: str = "recipient_skipped"


@attrs.frozen
class ProgressUpdated:
    campaign_id: str
    workspace_id: str
    counters: CampaignCounters
    at: datetime
    kind: str = "progress"


DomainEvent = (
    CampaignStatusChanged
    | CallPlaced
    | CallEnded
    | RetryScheduled
    | RecipientSkipped
    | ProgressUpdated
)


class EventBus:
    """An event sink that fans out to callbacks and async subscribers.

    ``emit`` is thread-safe and never blocks: each async subscriber has a
    bounded buffer (oldest events dropped when a slow consumer falls behind,
    counted in ``dropped``). ``history`` keeps the last ``keep`` events for
    tests and notebooks.
    """

    def __init__(self, *, keep: int = 10_000) -> None:
        self._callbacks: list[Callable[[DomainEvent], None]] = []
        self._subscribers: list[Subscription] = []
        self._lock = threading.Lock()
        self.history: deque[DomainEvent] = deque(maxlen=keep)

    def emit(self, event: DomainEvent) -> None:
        with self._lock:
            self.history.append(event)
            callbacks = list(self._callbacks)
            subscribers = list(self._subscribers)
        for callback in callbacks:
            callback(event)
        for sub in subscribers:
            sub.push(event)

    def on(self, callback: Callable[[DomainEvent], None]) -> Callable[[], None]:
        """Call ``callback`` for each event; returns a function that unsubscribes."""
        with self._lock:
            self._callbacks.append(callback)

        def off() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return off

    def subscribe(
        self,
        *,
        campaign_id: str | None = None,
        workspace_id: str | None = None,
        buffer: int = 1000,
    ) -> Subscription:
        """An async iterator of events as they happen (optionally for one campaign or
        workspace). It is registered at once, so nothing emitted after this call is
        missed; ``close()`` it (or use ``async with``) when done. Call it from the
        event loop that will consume it."""
        sub = Subscription(self, asyncio.get_running_loop(), buffer, campaign_id, workspace_id)
        with self._lock:
            self._subscribers.append(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)

    @property
    def dropped(self) -> int:
        return sum(s.dropped for s in self._subscribers)


class Subscription:
    """What :meth:`EventBus.subscribe` returns: ``async for event in subscription``."""

    def __init__(
        self,
        bus: EventBus,
        loop: asyncio.AbstractEventLoop,
        size: int,
        campaign_id: str | None,
        workspace_id: str | None,
    ) -> None:
        self._bus = bus
        self.loop = loop
        self.buffer: deque[Any] = deque(maxlen=size)
        self.ready = asyncio.Event()
        self.campaign_id = campaign_id
        self.workspace_id = workspace_id
        self.dropped = 0
        self.closed = False

    def push(self, event: DomainEvent) -> None:
        if self.campaign_id is not None and event.campaign_id != self.campaign_id:
            return
        if self.workspace_id is not None and event.workspace_id != self.workspace_id:
            return
        if len(self.buffer) == self.buffer.maxlen:
            self.dropped += 1
        self.buffer.append(event)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self.ready.set()
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.ready.set)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> DomainEvent:
        while not self.buffer:
            if self.closed:
                raise StopAsyncIteration
            self.ready.clear()
            await self.ready.wait()
        event: DomainEvent = self.buffer.popleft()
        return event

    def close(self) -> None:
        """Stop receiving; a consumer waiting in ``async for`` ends."""
        self.closed = True
        self._bus._remove(self)
        self.ready.set()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

"""Group commit for provider events: many concurrent webhook handlers, one commit.

A web service receives provider webhooks concurrently. Each handler verifies its
request and hands the event to one :class:`EventApplier`; a single background
task takes everything queued so far (up to ``max_batch``), applies it in one
repository transaction in a worker thread (``CampaignService.apply_events`` or
``DialerCore.apply_events``), commits once, and only then answers each handler
with its own result or its own exception.

There is no timer: a lone event is applied at once, in a batch of one. Under
load, events queue up while the previous batch commits, so batches form by
themselves and the commit is shared.

::

    async with EventApplier(service.apply_events) as applier:
        result = await applier.apply(event)  # from any number of handlers
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType

from outdial.dispatch import EventResult
from outdial.errors import ApplierClosed
from outdial.ports import CallEvent

__all__ = ["ApplyEvents", "EventApplier"]

#: What the applier calls in a worker thread: the events in order, one result (or
#: the exception that event raised on its own) per event, in order.
ApplyEvents = Callable[[Sequence[CallEvent]], Sequence[EventResult | Exception]]

_Waiter = tuple[CallEvent, "asyncio.Future[EventResult]"]


class EventApplier:
    """Applies events from concurrent handlers in shared transactions (group commit).

    ``apply_events`` is ``CampaignService.apply_events`` (or a function that calls
    ``DialerCore.apply_events`` with the time); it runs in a worker thread
    (:func:`asyncio.to_thread`) so the database never blocks the event loop, one
    batch at a time.

    Use it as an async context manager (or :meth:`start` / :meth:`stop`).
    :meth:`stop` refuses new events and applies every event already queued before
    it returns, so none is dropped. A handler cancelled while its event is still
    queued withdraws it; once its batch has started, the batch goes on (the event
    is applied, the result is dropped) and the other handlers are unaffected.
    """

    def __init__(self, apply_events: ApplyEvents, *, max_batch: int = 256) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self._apply_events = apply_events
        self.max_batch = max_batch
        self._queue: deque[_Waiter] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        #: batches applied and events in them (the mean batch is ``events / batches``)
        self.batches = 0
        self.events = 0

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`: :meth:`apply` takes events."""
        return self._task is not None and not self._closing

    @property
    def mean_batch(self) -> float:
        """The mean number of events per transaction so far (0.0 before any)."""
        return self.events / self.batches if self.batches else 0.0

    async def start(self) -> None:
        """Start the background task on the running loop."""
        if self._task is not None:
            raise RuntimeError("EventApplier already started")
        self._wake = asyncio.Event()
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="outdial-event-applier"
        )

    async def stop(self) -> None:
        """Refuse new events, apply the queued ones, and end the background task.

        If the task cannot finish (it is cancelled), the events still queued fail
        with a :class:`~outdial.errors.ApplierClosed` that says so: none is silently dropped.
        """
        task = self._task
        if task is None:
            return
        self._closing = True
        assert self._wake is not None
        self._wake.set()
        try:
            await asyncio.shield(task)
        finally:
            if task.done():
                self._task = None
                self._fail_queued()

    async def __aenter__(self) -> EventApplier:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def apply(self, event: CallEvent) -> EventResult:
        """Apply ``event`` exactly once, with whatever else is queued; its result.

        Raises what applying the event on its own raised (e.g.
        :class:`~outdial.errors.StaleClaim`), or :class:`~outdial.errors.ApplierClosed` when the
        applier is not running (not started, or stopping).
        """
        if not self.running:
            raise ApplierClosed("EventApplier is not running: start it (async with) first")
        future: asyncio.Future[EventResult] = asyncio.get_running_loop().create_future()
        self._queue.append((event, future))
        assert self._wake is not None
        self._wake.set()
        return await future

    # -- the background task ----------------------------------------------------------------

    async def _run(self) -> None:
        queue, wake = self._queue, self._wake
        assert wake is not None
        try:
            while True:
                if not queue:
                    if self._closing:
                        return
                    wake.clear()
                    await wake.wait()
                    continue
                batch: list[_Waiter] = []
                while queue and len(batch) < self.max_batch:
                    waiter = queue.popleft()
                    if not waiter[1].done():  # a cancelled handler withdrew its event
                        batch.append(waiter)
                if batch:
                    await self._apply(batch)
        finally:
            self._fail_queued()

    async def _apply(self, batch: list[_Waiter]) -> None:
        events = [event for event, _ in batch]
        try:
            results = await asyncio.to_thread(self._apply_events, events)
            if len(results) != len(batch):
                raise RuntimeError(
                    f"apply_events returned {len(results)} results for {len(batch)} events"
                )
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(
                        exc
                        if isinstance(exc, Exception)
                        else ApplierClosed(
                            "EventApplier was cancelled while applying this event"
                            " (it may have been applied)"
                        )
                    )
            if not isinstance(exc, Exception):
                raise
            return
        self.batches += 1
        self.events += len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # its handler was cancelled; the event was applied anyway
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    def _fail_queued(self) -> None:
        while self._queue:
            _, future = self._queue.popleft()
            if not future.done():
                future.set_exception(
                    ApplierClosed("EventApplier stopped before this event was applied")
                )

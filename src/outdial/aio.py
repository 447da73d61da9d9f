"""The asyncio dialer: the twin of :class:`outdial.dialer.Dialer`.

Same engine, same :class:`~outdial.dispatch.DialerCore`, same behaviour; calls
are placed concurrently with ``asyncio`` and providers are
:class:`~outdial.ports.AsyncCallProvider`. Repository work runs in a worker
thread when the repository does blocking I/O (``repository.blocking``), so the
event loop never stalls on the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from outdial.dialer import _LOST_RACE, RunSummary, _Base, _reconcile_targets
from outdial.dispatch import Claim, EventResult
from outdial.engine import Plan
from outdial.errors import ProviderError, ProviderUnavailable
from outdial.ports import AsyncCallProvider, CallEvent

__all__ = ["AsyncDialer"]

T = TypeVar("T")


class AsyncDialer(_Base):
    """asyncio runner. ``provider`` is one :class:`AsyncCallProvider` or a mapping of them."""

    def __init__(
        self,
        repository: Any,
        provider: AsyncCallProvider | Mapping[str, AsyncCallProvider],
        *,
        max_concurrent_placements: int = 50,
        **kwargs: Any,
    ) -> None:
        super().__init__(repository, provider, **kwargs)
        self._placing = asyncio.Semaphore(max_concurrent_placements)
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        if getattr(self.repository, "blocking", False):
            return await asyncio.to_thread(fn, *args)
        return fn(*args)

    # -- one step ------------------------------------------------

    async def tick(self) -> datetime | None:
        now = self.clock.now()
        await self._reconcile(now)
        claims, plan = await self._db(self.core.dispatch, now)
        return await self._carry_on(now, claims, plan)

    async def _carry_on(self, now: datetime, claims: list[Claim], plan: Plan) -> datetime | None:
        """The rest of a tick once a dispatch round has committed ``claims``: place them,
        and dispatch again while the engine can do more at once."""
        while True:
            if plan.transitions:
                self._log_transitions(plan)
            if claims:
                await asyncio.gather(*(self._place(c) for c in claims))
            if plan.wake_at is not None and plan.wake_at <= now:
                # the engine can do more right now (a campaign activated, recipients were
                # skipped, more due recipients wait behind those it looked at)
                now = self.clock.now()
                claims, plan = await self._db(self.core.dispatch, now)
                continue
            return plan.wake_at

    async def submit(self, event: CallEvent) -> EventResult:
        """Apply a provider event (e.g. from a webhook) and wake the dialer."""
        result = await self._db(self.core.apply_event, self.clock.now(), event)
        self._applied(result, event)
        self.wake()
        return result

    async def recover(self) -> int:
        now = self.clock.now()
        attempts = await self._db(partial(self.core.unfinished, now, own_only=True))
        for attempt in attempts:
            await self._reconcile_one(now, attempt.id, attempt.provider, attempt.external_call_id)
        self._recovered = True
        return len(attempts)

    # -- running ------------------------------------------------

    async def run_until_idle(
        self, *, until: datetime | None = None, max_ticks: int | None = None
    ) -> RunSummary:
        started = self.clock.now()
        placed0, applied0 = self.calls_placed, self.events_applied
        if not self._recovered:
            await self.recover()
        advance = getattr(self.clock, "advance_to", None)
        # the same loop as Dialer's (_Base._steps), each step awaited as it comes
        steps = self._steps(advance, until, max_ticks)
        try:
            step, args = next(steps)
            while True:
                step, args = steps.send(await step(*args))
        except StopIteration as done:
            ticks: int = done.value
        return self._finish_run(started, placed0, applied0, ticks, advance, until)

    def _stop_requested(self) -> bool:
        return self._stopping

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        """Run until :meth:`stop` (or cancellation). Event-driven: no polling interval."""
        self._stopping = False
        self._wake = asyncio.Event()
        self.log.info("dialer_started")
        try:
            try:
                await self.recover()
            except Exception:  # logged; the loop goes on (reconciling later)
                self.log.exception("recover_failed")
            while not self._stopping:
                self._wake.clear()
                try:
                    wake = await self.tick()
                    now = self.clock.now()
                    delivered, _freed = await self._deliver_due(now)
                    if delivered:
                        continue
                    nxt = self._next_wake(wake)
                except Exception:
                    self.log.exception("tick_failed")
                    nxt = self.clock.now() + timedelta(seconds=1)
                if self._next_reconcile is not None:
                    nxt = self._next_reconcile if nxt is None else min(nxt, self._next_reconcile)
                if self._stop_requested():
                    break
                idle_until = self.clock.now() + self.max_idle
                await self._sleep_until(idle_until if nxt is None else min(nxt, idle_until))
        finally:
            self.log.info("dialer_stopped")

    def start(self) -> asyncio.Task[None]:
        """Start :meth:`run` as a task on the running loop."""
        if self._task is not None and not self._task.done():
            raise RuntimeError("dialer already started")
        self._task = asyncio.get_running_loop().create_task(self.run(), name="outdial-dialer")
        return self._task

    async def stop(self) -> None:
        """Stop after the current step; calls in flight finish and are recorded later."""
        self._stopping = True
        self.wake()
        if self._task is not None:
            await self._task
            self._task = None

    async def __aenter__(self) -> AsyncDialer:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _sleep_until(self, when: datetime | None) -> bool:
        """Sleep until ``when`` or a wake-up; True when woken."""
        if self._wake is None:
            self._wake = asyncio.Event()
        timeout = None if when is None else max(0.0, (when - self.clock.now()).total_seconds())
        woken = True
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except asyncio.TimeoutError:
            woken = False
        self._wake.clear()
        return woken

    # -- I/O ------------------------------------------------

    async def _deliver_due(self, now: datetime) -> tuple[int, int]:
        n = freed = 0
        for source in self._event_sources():
            for event in source.due_events(now):
                freed += await self._apply_event(now, event)
                n += 1
        return n, freed

    async def _apply_event(self, now: datetime, event: CallEvent) -> int:
        """Apply one event (in its own transaction); 1 when it freed a slot, else 0."""
        return self._applied(await self._db(self.core.apply_event, now, event), event)

    async def _apply_event_and_tick(
        self, now: datetime, event: CallEvent, dispatch: bool, wake: datetime | None
    ) -> tuple[bool, datetime | None]:
        """Apply the last event due ``now`` and, when it frees a slot or ``dispatch``
        (the tick is due), the tick it triggers: the event and the tick's first
        dispatch in one transaction. Returns whether it ticked, and the wake time
        (``wake`` when it did not)."""
        result, dispatched = await self._db(
            partial(self.core.apply_event_and_dispatch, now, event, dispatch=dispatch)
        )
        self._applied(result, event)
        if dispatched is None:
            return False, wake
        claims, plan = dispatched
        return True, await self._carry_on(now, claims, plan)

    async def _place(self, claim: Claim) -> None:
        async with self._placing:
            try:
                placed = await self.provider_for(claim.provider).place_call(claim.request)
            except ProviderError as exc:
                await self._dial_failed(claim, exc)
                return
            except Exception as exc:
                self.log.exception("place_call_crashed", attempt=claim.attempt.id)
                await self._dial_failed(claim, ProviderUnavailable(repr(exc), placed=None))
                return
        self.calls_placed += 1
        await self._db(self.core.record_placed, self.clock.now(), claim, placed)
        if self.log is not self._debug_dropped_by:
            self._log_placed(claim, placed)

    async def _dial_failed(self, claim: Claim, exc: ProviderError) -> None:
        decision = await self._db(self.core.record_dial_error, self.clock.now(), claim, exc)
        self._dial_error_recorded(claim, exc, decision)

    async def _reconcile(self, now: datetime) -> None:
        todo = self._reconcile_todo(now)
        if todo is None:
            return
        due, periodic = todo
        unfinished = await self._db(self.core.unfinished, now) if periodic else []
        for aid, (name, external) in _reconcile_targets(unfinished, due).items():
            await self._reconcile_one(now, aid, name, external)

    async def _reconcile_one(
        self, now: datetime, attempt_id: str, provider_name: str | None, external: str | None
    ) -> None:
        view: CallEvent | ProviderError | None
        try:
            provider = self.provider_for(provider_name)
            view = await provider.fetch_call(attempt_id=attempt_id, external_call_id=external)
        except ProviderError as exc:
            view = exc
        try:
            decision = await self._db(self.core.record_reconcile, now, attempt_id, view)
        except _LOST_RACE as exc:
            self._reconcile_lost(now, attempt_id, exc)
            return
        self._reconciled(attempt_id, decision)

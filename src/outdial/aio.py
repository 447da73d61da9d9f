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

from outdial.dialer import RunSummary, _Base
from outdial.dispatch import Claim, EventResult
from outdial.engine import Plan
from outdial.errors import ProviderError, ProviderUnavailable
from outdial.phone import mask_phone
from outdial.ports import AsyncCallProvider, CallEvent, EventSource

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
        wake = await self.tick()
        ticks = 1
        # the same steps as Dialer._run (see there)
        fusable = self._fusable_source() if advance is not None else None
        known = False  # whether known_at is the fusable source's next event, still valid
        known_at: datetime | None = None
        while max_ticks is None or ticks < max_ticks:
            now = self.clock.now()
            still_known, known = known, False
            if fusable is not None and not self._reconcile_due(now):
                # virtual time, nothing to reconcile: the last event due now and the tick it
                # triggers share one transaction (same steps, same order, one commit)
                at = known_at if still_known else fusable.next_event_at()
                if at is not None and at <= now:
                    delivered, ticked, wake = await self._deliver_and_tick(fusable, now, wake)
                    if ticked:
                        ticks += 1
                        continue
                    if delivered:
                        continue  # the tick was not due (_deliver_and_tick looked)
                if wake is not None and wake <= now:
                    # the engine's wake time has come (_tick_due, with nothing to reconcile)
                    wake = await self.tick()
                    ticks += 1
                    continue
                if at is not None and at <= now:
                    at = fusable.next_event_at()  # it had nothing due after all: ask again
                nxt = at if wake is None or (at is not None and at < wake) else wake
                if self._recheck:
                    nxt = self._next_wake(nxt, asked=True)
                known_at = at
                fused = True
            else:
                fused = False
                delivered, freed = await self._deliver_due(now)
                if freed or self._tick_due(now, wake):
                    wake = await self.tick()
                    ticks += 1
                    continue
                if delivered:
                    continue
                nxt = self._next_wake(wake)
            if nxt is None or (until is not None and nxt > until):
                break
            if nxt > now:
                if advance is not None:
                    advance(nxt)
                    known = fused
                elif await self._sleep_until(nxt):
                    wake = now
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
            await self.recover()
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
                result = await self._db(self.core.apply_event, now, event)
                freed += self._applied(result, event)
                n += 1
        return n, freed

    async def _deliver_and_tick(
        self, source: EventSource, now: datetime, wake: datetime | None
    ) -> tuple[int, bool, datetime | None]:
        """:meth:`_deliver_due` then, when it frees a slot or something is due, the
        tick, with the last event and the tick's first dispatch in one transaction.
        Only for the fusable source at an instant with nothing to reconcile, where
        the tick is due when the engine's ``wake`` time has come (:meth:`_tick_due`).
        Returns (events delivered, whether it ticked, the wake time)."""
        events = source.due_events(now)
        if not events:
            return 0, False, wake
        freed = 0
        last = len(events) - 1
        for event in events[:last]:
            result = await self._db(self.core.apply_event, now, event)
            freed += self._applied(result, event)
        event = events[last]
        force = freed > 0 or (wake is not None and wake <= now)  # _tick_due: nothing to reconcile
        result, dispatched = await self._db(
            partial(self.core.apply_event_and_dispatch, now, event, dispatch=force)
        )
        self._applied(result, event)
        if dispatched is None:
            return len(events), False, wake
        claims, plan = dispatched
        return len(events), True, await self._carry_on(now, claims, plan)

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
        self.log.debug("call_placed", attempt=claim.attempt.id, to=mask_phone(claim.request.to))

    async def _dial_failed(self, claim: Claim, exc: ProviderError) -> None:
        decision = await self._db(self.core.record_dial_error, self.clock.now(), claim, exc)
        self.log.warning(
            "place_call_failed",
            attempt=claim.attempt.id,
            to=mask_phone(claim.request.to),
            error=str(exc),
            retryable=exc.retryable,
            placed=exc.placed,
        )
        if decision.recheck_at is not None:
            self._recheck[claim.attempt.id] = decision.recheck_at

    async def _reconcile(self, now: datetime) -> None:
        due = [aid for aid, t in self._recheck.items() if t <= now]
        periodic = self._next_reconcile is None or self._next_reconcile <= now
        if not due and not periodic:
            return
        for aid in due:
            self._recheck.pop(aid, None)
        targets: dict[str, tuple[str | None, str | None]] = {}
        if periodic:
            self._next_reconcile = now + self.reconcile_interval
            for a in await self._db(self.core.unfinished, now):
                targets[a.id] = (a.provider, a.external_call_id)
        for aid in due:
            targets.setdefault(aid, (None, None))
        for aid, (name, external) in targets.items():
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
        decision = await self._db(self.core.record_reconcile, now, attempt_id, view)
        if decision.recheck_at is not None:
            self._recheck[attempt_id] = decision.recheck_at

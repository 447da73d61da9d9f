"""The synchronous dialer: drives the engine through the ports.

:class:`Dialer` is thin: every decision is the engine's, every rule about
storage is :class:`~outdial.dispatch.DialerCore`'s. What it adds is I/O:
reading the clock, placing calls, reconciling with providers, logging with
structlog, and waiting.

Two ways to run it:

- :meth:`Dialer.run_until_idle` runs until nothing is left to do. With a
  :class:`~outdial.simulation.VirtualClock` it never sleeps: it jumps the clock
  to the next instant something happens (a call ends, a retry is due, a window
  opens), so a whole campaign runs in milliseconds. There, nothing else runs
  between two steps, so a step is one transaction: the last event due at an
  instant, the dispatch it triggers and the records of the calls placed since
  the previous step (in the order they happened). Claims are still committed
  before any provider is asked to dial, and every placement is recorded before
  the run returns.
- :meth:`Dialer.start` / :meth:`Dialer.stop` run it in a background thread for
  a service. It is event-driven: :meth:`Dialer.submit` (a webhook) or
  :meth:`Dialer.wake` wakes it at once, so a call that ends frees its slot and
  the next call is placed with no polling interval.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import attrs
import structlog

from outdial.dispatch import Claim, DialerCore, EventResult, Placement
from outdial.engine import Effect, Engine, Plan, ResultDecision
from outdial.errors import ProviderError, ProviderUnavailable, StaleClaim, StaleRead
from outdial.phone import mask_phone
from outdial.ports import (
    CallEvent,
    CallProvider,
    Clock,
    EventSink,
    EventSource,
    PlacedCall,
    Repository,
    SystemClock,
)
from outdial.recipient import Attempt
from outdial.retry import RandomSource

__all__ = ["Dialer", "RunSummary"]

#: a step of ``run_until_idle`` that does I/O: a runner's method and its arguments
#: (see :meth:`_Base._steps`)
_Step = tuple[Callable[..., Any], tuple[Any, ...]]

#: effects of an event that changed nothing (logged at debug level)
_IGNORED = (Effect.DUPLICATE, Effect.STALE, Effect.LATE)
#: what a reconcile raises when another worker's write overtook it (see _reconcile_lost)
_LOST_RACE = (StaleClaim, StaleRead)
#: how long after such a lost race the attempt is looked at again
_RECONCILE_CONFLICT_DELAY = timedelta(seconds=1)
#: the effect of an event that changed something (counted, not logged)
_APPLIED = Effect.APPLIED

#: ``debug`` of structlog's filtering bound loggers whose level is above debug: the same
#: no-op function for every such level (their class is made once per level and fixed)
_DEBUG_DROPPED = structlog.make_filtering_bound_logger(logging.INFO).debug


def _drops_debug(log: object) -> bool:
    """Whether ``log`` drops every debug line, now and later: a structlog filtering bound
    logger of a level above debug (its class's ``debug`` is structlog's no-op, and such a
    class never changes level) that does not override ``debug`` itself. False for any
    other logger, e.g. one over the standard library, whose level can change at any time."""
    return getattr(type(log), "debug", None) is _DEBUG_DROPPED and "debug" not in getattr(
        log, "__dict__", {}
    )


def _reconcile_targets(
    unfinished: Sequence[Attempt], due: list[str]
) -> dict[str, tuple[str | None, str | None]]:
    """The attempts to reconcile, in order, each with its provider and external call id
    when known: the ``unfinished`` ones, then those whose recheck is ``due``."""
    targets = {a.id: (a.provider, a.external_call_id) for a in unfinished}
    for aid in due:
        targets.setdefault(aid, (None, None))
    return targets


@attrs.frozen
class RunSummary:
    """What :meth:`Dialer.run_until_idle` did."""

    started_at: datetime
    finished_at: datetime
    calls_placed: int
    events_applied: int
    ticks: int

    @property
    def virtual_duration(self) -> timedelta:
        return self.finished_at - self.started_at


class _Base:
    """What the sync and async runners share (no I/O here)."""

    # The steps of ``run_until_idle`` that do I/O (:meth:`_steps`): each runner has them,
    # plain in :class:`Dialer`, coroutines in :class:`~outdial.aio.AsyncDialer`.
    tick: Callable[[], Any]
    _deliver_due: Callable[[datetime], Any]
    _apply_event: Callable[[datetime, CallEvent], Any]
    _apply_event_and_tick: Callable[[datetime, CallEvent, bool, datetime | None], Any]
    _sleep_until: Callable[[datetime], Any]

    def __init__(
        self,
        repository: Repository,
        provider: Any,
        *,
        clock: Clock | None = None,
        engine: Engine | None = None,
        events: EventSink | None = None,
        rng: RandomSource | None = None,
        worker_id: str | None = None,
        new_id: Callable[[], str] | None = None,
        reconcile_interval: timedelta = timedelta(seconds=60),
        max_idle: timedelta = timedelta(seconds=2),
        logger: Any = None,
    ) -> None:
        self.repository = repository
        self.clock: Clock = clock or SystemClock()
        self.core = DialerCore(
            repository, engine, events=events, worker_id=worker_id, rng=rng, new_id=new_id
        )
        self._providers: Mapping[str, Any] | None = None
        self._provider: Any = None
        if isinstance(provider, Mapping):
            self._providers = dict(provider)
        else:
            self._provider = provider
        self.reconcile_interval = reconcile_interval
        #: In the long-running mode, the longest the dialer sleeps without looking: changes
        #: made by other processes (webhooks applied by a web server, other workers) that
        #: could not wake it are picked up within this delay. Wakes within the process
        #: (``submit``, ``wake``, a call ending) are immediate.
        self.max_idle = max_idle
        self.log = logger or structlog.get_logger("outdial.dialer").bind(worker=self.core.worker_id)
        #: the last log seen to drop debug lines (:func:`_drops_debug`): while ``self.log`` is
        #: that very object, placements skip their debug line (a keyword call per call);
        #: another log assigned to ``self.log`` is looked at again
        self._debug_dropped_by: object = None
        self.calls_placed = 0
        self.events_applied = 0
        self._recheck: dict[str, datetime] = {}
        self._next_reconcile: datetime | None = None
        self._recovered = False
        self._sources: list[EventSource] | None = None

    def _finish_run(
        self,
        started: datetime,
        placed0: int,
        applied0: int,
        ticks: int,
        advance: Callable[[datetime], object] | None,
        until: datetime | None,
    ) -> RunSummary:
        """The end of ``run_until_idle``: a virtual clock moved on to ``until``, and
        what the run did."""
        if until is not None and advance is not None and self.clock.now() < until:
            advance(until)
        return RunSummary(
            started,
            self.clock.now(),
            self.calls_placed - placed0,
            self.events_applied - applied0,
            ticks,
        )

    @property
    def engine(self) -> Engine:
        return self.core.engine

    @property
    def worker_id(self) -> str:
        return self.core.worker_id

    def provider_for(self, name: str | None) -> Any:
        """The provider for a campaign's ``agent.provider``: the one provider given, or
        the mapping's entry of that exact name (never another provider's)."""
        if self._providers is None:
            return self._provider
        if name is not None and name in self._providers:
            return self._providers[name]
        raise ProviderError(
            f"no provider configured for {name!r} (configured: {', '.join(self._providers)})",
            provider=name or "",
            placed=False,
        )

    def _event_sources(self) -> list[EventSource]:
        if self._sources is None:
            candidates = (
                list(self._providers.values()) if self._providers is not None else [self._provider]
            )
            self._sources = [p for p in candidates if isinstance(p, EventSource)]
        return self._sources

    def _tick_due(self, now: datetime, wake: datetime | None) -> bool:
        """Whether the engine must look again at ``now`` (its wake time or a recheck)."""
        if wake is not None and wake <= now:
            return True
        if self._next_reconcile is not None and self._next_reconcile <= now:
            return True
        return bool(self._recheck) and any(t <= now for t in self._recheck.values())

    def _reconcile_due(self, now: datetime) -> bool:
        """Whether a tick at ``now`` would reconcile anything before dispatching."""
        if self._next_reconcile is None or self._next_reconcile <= now:
            return True
        return bool(self._recheck) and any(t <= now for t in self._recheck.values())

    def _fusable_source(self) -> EventSource | None:
        """The event source whose last due event may be applied in the same transaction
        as the dispatch it triggers, at an instant with nothing to reconcile first
        (which a tick does before its dispatch, see :meth:`_reconcile_due`): only
        with one source, so events are applied in the same order."""
        sources = self._event_sources()
        return sources[0] if len(sources) == 1 else None

    def _next_wake(self, wake: datetime | None, asked: bool = False) -> datetime | None:
        """The earliest of ``wake``, the sources' next events and the rechecks.

        ``asked``: ``wake`` already counts the sources' next events (they are not
        asked again)."""
        best = wake
        for source in () if asked else self._event_sources():
            t = source.next_event_at()
            if t is not None and (best is None or t < best):
                best = t
        for t in self._recheck.values():
            if best is None or t < best:
                best = t
        return best

    def _steps(
        self,
        advance: Callable[[datetime], object] | None,
        until: datetime | None,
        max_ticks: int | None,
    ) -> Generator[_Step, Any, int]:
        """The loop of ``run_until_idle``, the same for both runners, without its I/O.

        A generator: it yields each step that does I/O as one of the runner's methods
        and its arguments (``(self.tick, ())``); the runner does the step (calls it,
        or awaits it) and sends the result back. Returns how many ticks ran. It
        reads the clock, asks the event source when its next event is due and
        moves a virtual clock (``advance``) itself: none of them waits.

        In virtual time with one event source (:meth:`_fusable_source`), at an
        instant with nothing to reconcile, the last event due and the tick it
        triggers share one transaction (:meth:`_apply_event_and_tick`). A step
        asks the source for its next event (``next_event_at``), and for the events
        themselves (``due_events``) only once that instant has come. The answer
        stays valid until anything happens (a delivery, a tick): moving the clock
        changes nothing the source holds, so after a jump it is not asked again.
        """
        clock = self.clock
        wake = yield self.tick, ()
        ticks = 1
        fusable = self._fusable_source() if advance is not None else None
        at: datetime | None = None  # the fusable source's next event ...
        known = False  # ... still valid: nothing happened since it was asked
        while max_ticks is None or ticks < max_ticks:
            now = clock.now()
            # not self._reconcile_due(now), without the call when nothing is to be rechecked
            next_reconcile = self._next_reconcile
            if (
                fusable is not None
                and next_reconcile is not None
                and next_reconcile > now
                and not (self._recheck and self._reconcile_due(now))
            ):
                if known:
                    known = False
                else:
                    at = fusable.next_event_at()
                if at is not None and at <= now:
                    events = fusable.due_events(now)
                    if events:
                        freed = 0
                        if len(events) > 1:
                            for event in events[:-1]:
                                freed += yield self._apply_event, (now, event)
                        # the tick is due (_tick_due, with nothing to reconcile) when a slot
                        # is free or the engine's wake time has come
                        due = freed > 0 or (wake is not None and wake <= now)
                        last = events[-1]
                        ticked, wake = yield self._apply_event_and_tick, (now, last, due, wake)
                        if ticked:
                            ticks += 1
                        continue
                if wake is not None and wake <= now:
                    # the engine's wake time has come (_tick_due, with nothing to reconcile)
                    wake = yield self.tick, ()
                    ticks += 1
                    continue
                if at is not None and at <= now:
                    at = fusable.next_event_at()  # it had nothing due after all: ask again
                nxt = at if wake is None or (at is not None and at < wake) else wake
                if self._recheck:
                    nxt = self._next_wake(nxt, asked=True)
                fused = True
            else:
                known = fused = False
                delivered, freed = yield self._deliver_due, (now,)
                if freed or self._tick_due(now, wake):
                    # a call ended (its slot is free) or something is due: look again now
                    wake = yield self.tick, ()
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
                elif (yield self._sleep_until, (nxt,)):
                    wake = now  # woken by an event: look at once
        return ticks

    def _reconcile_todo(self, now: datetime) -> tuple[list[str], bool] | None:
        """What a tick at ``now`` reconciles first (None: nothing): the attempts whose
        recheck is due, taken off the recheck list, and whether the periodic look over
        unfinished attempts is due (the next one is then scheduled)."""
        due = [aid for aid, t in self._recheck.items() if t <= now]
        periodic = self._next_reconcile is None or self._next_reconcile <= now
        if not due and not periodic:
            return None
        for aid in due:
            self._recheck.pop(aid, None)
        if periodic:
            self._next_reconcile = now + self.reconcile_interval
        return due, periodic

    def _dial_error_recorded(
        self, claim: Claim, exc: ProviderError, decision: ResultDecision
    ) -> None:
        """Log a dial that failed, once its error is recorded (``decision``), and
        recheck it later when its fate is unknown."""
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

    def _log_transitions(self, plan: Plan) -> None:
        """Log the campaign transitions a dispatch round committed."""
        for t in plan.transitions:
            self.log.info("campaign_transition", campaign=t.campaign_id, action=str(t.action))

    def _reconcile_lost(self, now: datetime, attempt_id: str, exc: StaleClaim | StaleRead) -> None:
        """Log a reconcile that another write overtook (nothing was stored) and look at
        the attempt again ``_RECONCILE_CONFLICT_DELAY`` (a second) later.

        Another worker took the attempt over (``StaleClaim``) or moved its recipient
        or campaign between this worker's read and its write (``StaleRead``). Looking
        again decides from what is stored then: an attempt that has ended since is
        left alone, one still in doubt is reconciled."""
        self.log.info("reconcile_conflict", attempt=attempt_id, error=str(exc))
        self._recheck[attempt_id] = now + _RECONCILE_CONFLICT_DELAY

    def _reconciled(self, attempt_id: str, decision: ResultDecision) -> None:
        """Log a reconciled attempt, and recheck it later when its fate is still unknown."""
        self.log.info(
            "attempt_reconciled",
            attempt=attempt_id,
            effect=str(decision.effect),
            reason=decision.reason,
        )
        if decision.recheck_at is not None:
            self._recheck[attempt_id] = decision.recheck_at

    def _log_placed(self, claim: Claim, placed: PlacedCall) -> None:
        """Log a placed call at debug level, unless ``self.log`` drops debug lines (then
        it is remembered: the runners skip this call while ``self.log`` is that log)."""
        log = self.log
        if _drops_debug(log):
            self._debug_dropped_by = log
        else:
            log.debug("call_placed", attempt=claim.attempt.id, provider=placed.provider)

    def _applied(self, result: EventResult, event: CallEvent) -> int:
        """Count and log one applied event; 1 when it freed a slot, else 0."""
        effect = result.effect
        if effect is None or effect in _IGNORED:
            self._log_result(result, event)
        if effect is not None:
            self.events_applied += 1
        return 1 if result.freed else 0

    def _log_result(self, result: EventResult, event: CallEvent) -> None:
        if result.effect is None:
            self.log.warning(
                "event_for_unknown_call",
                provider=event.provider,
                external_call_id=event.external_call_id,
            )
        elif result.effect in _IGNORED:
            self.log.debug(
                "event_ignored",
                effect=str(result.effect),
                attempt=result.attempt_id,
                reason=result.reason,
            )


class Dialer(_Base):
    """Synchronous runner. ``provider`` is one :class:`CallProvider` or a mapping
    from provider name (``campaign.agent.provider``) to provider."""

    def __init__(
        self,
        repository: Repository,
        provider: CallProvider | Mapping[str, CallProvider],
        *,
        placement_threads: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(repository, provider, **kwargs)
        self.placement_threads = placement_threads
        self._pool = (
            ThreadPoolExecutor(placement_threads, thread_name_prefix="outdial-place")
            if placement_threads
            else None
        )
        # Calls placed but not yet recorded: in virtual time, the records of one round are
        # written together, or with the next event, in one transaction (see _flush_placed).
        self._placements: list[Placement] = []
        self._defer_records = False
        self._cond = threading.Condition()
        self._woken = False
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- one step ------------------------------------------------

    def tick(self) -> datetime | None:
        """Reconcile what is due, then dispatch until nothing more can start now.

        Returns the instant the engine next needs to look (None: only on events).
        """
        self._flush_placed()
        now = self.clock.now()
        self._reconcile(now)
        claims, plan = self.core.dispatch(now)
        return self._carry_on(now, claims, plan)

    def _carry_on(self, now: datetime, claims: list[Claim], plan: Plan) -> datetime | None:
        """The rest of a tick once a dispatch round has committed ``claims``: place them,
        and dispatch again while the engine can do more at once."""
        while True:
            if plan.transitions:
                self._log_transitions(plan)
            if claims:
                if self._pool is None or len(claims) == 1:
                    for claim in claims:
                        self._place(claim)
                else:
                    list(self._pool.map(self._place, claims))
            wake_at = plan.wake_at
            if wake_at is not None and wake_at <= now:
                # the engine can do more right now (a campaign activated, recipients were
                # skipped, more due recipients wait behind those it looked at)
                self._flush_placed()
                now = self.clock.now()
                claims, plan = self.core.dispatch(now)
                continue
            return wake_at

    def submit(self, event: CallEvent) -> EventResult:
        """Apply a provider event (e.g. from a webhook) and wake the dialer."""
        self._flush_placed()
        result = self.core.apply_event(self.clock.now(), event)
        self._applied(result, event)
        self.wake()
        return result

    def recover(self) -> int:
        """Reconcile this worker's unfinished attempts (after a restart) and any stale
        ones; returns how many were looked at."""
        self._flush_placed()
        now = self.clock.now()
        attempts = self.core.unfinished(now, own_only=True)
        for attempt in attempts:
            self._reconcile_one(now, attempt.id, attempt.provider, attempt.external_call_id)
        self._recovered = True
        return len(attempts)

    # -- running ------------------------------------------------

    def run_until_idle(
        self, *, until: datetime | None = None, max_ticks: int | None = None
    ) -> RunSummary:
        """Run until nothing is left to do (or ``until``).

        With a clock that has ``advance_to`` (a virtual clock) the clock jumps to
        the next instant anything happens; with the real clock it sleeps until then.
        """
        started = self.clock.now()
        placed0, applied0 = self.calls_placed, self.events_applied
        if not self._recovered:
            self.recover()
        advance = getattr(self.clock, "advance_to", None)
        # in virtual time nothing else runs between two steps: record placements late
        self._defer_records = advance is not None
        try:
            ticks = self._run(advance, until, max_ticks)
        finally:
            self._defer_records = False
            self._flush_placed()
        return self._finish_run(started, placed0, applied0, ticks, advance, until)

    def _run(
        self,
        advance: Callable[[datetime], object] | None,
        until: datetime | None,
        max_ticks: int | None,
    ) -> int:
        """The loop of :meth:`run_until_idle` (:meth:`_steps`), each step done as it
        comes; returns how many ticks it ran."""
        steps = self._steps(advance, until, max_ticks)
        try:
            step, args = next(steps)
            while True:
                step, args = steps.send(step(*args))
        except StopIteration as done:
            ticks: int = done.value
            return ticks

    def wake(self) -> None:
        """Make a waiting dialer look again at once."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def start(self) -> None:
        """Run in a background thread until :meth:`stop`."""
        if self._thread is not None:
            raise RuntimeError("dialer already started")
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="outdial-dialer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop the background thread; calls in flight finish and are recorded later."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = (
                ThreadPoolExecutor(self.placement_threads, thread_name_prefix="outdial-place")
                if self.placement_threads
                else None
            )

    def __enter__(self) -> Dialer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _stop_requested(self) -> bool:
        return self._stopping

    def _loop(self) -> None:
        self.log.info("dialer_started")
        try:
            self.recover()
        except Exception:  # pragma: no cover - logged, the loop goes on
            self.log.exception("recover_failed")
        while True:
            with self._cond:
                if self._stopping:
                    break
                self._woken = False
            try:
                wake = self.tick()
                now = self.clock.now()
                delivered, _freed = self._deliver_due(now)
                if delivered:
                    continue
                nxt = self._next_wake(wake)
            except Exception:
                self.log.exception("tick_failed")
                nxt = self.clock.now() + timedelta(seconds=1)
            if self._next_reconcile is not None:
                nxt = self._next_reconcile if nxt is None else min(nxt, self._next_reconcile)
            timeout = self.max_idle.total_seconds()
            if nxt is not None:
                timeout = min(timeout, max(0.0, (nxt - self.clock.now()).total_seconds()))
            with self._cond:
                if self._stop_requested():
                    break
                if not self._woken:
                    self._cond.wait(timeout)
        self.log.info("dialer_stopped")

    # -- I/O ------------------------------------------------

    def _deliver_due(self, now: datetime) -> tuple[int, int]:
        self._flush_placed()
        n = freed = 0
        for source in self._event_sources():
            for event in source.due_events(now):
                freed += self._apply_event(now, event)
                n += 1
        return n, freed

    def _apply_event(self, now: datetime, event: CallEvent) -> int:
        """Apply one event (in its own transaction); 1 when it freed a slot, else 0."""
        self._flush_placed()
        return self._applied(self.core.apply_event(now, event), event)

    def _apply_event_and_tick(
        self, now: datetime, event: CallEvent, dispatch: bool, wake: datetime | None
    ) -> tuple[bool, datetime | None]:
        """Apply the last event due ``now`` and, when it frees a slot or ``dispatch``
        (the tick is due), the tick it triggers: the event and the tick's first
        dispatch in one transaction. Returns whether it ticked, and the wake time
        (``wake`` when it did not)."""
        # the placements not yet recorded go first in the same transaction (the list is
        # emptied when they are committed; if nothing was, the next flush records them)
        result, dispatched = self.core.apply_event_and_dispatch(
            now, event, dispatch=dispatch, placed=self._placements
        )
        if result.effect is _APPLIED:
            self.events_applied += 1  # what self._applied(result, event) does with it
        else:
            self._applied(result, event)
        if dispatched is None:
            return False, wake
        claims, plan = dispatched
        return True, self._carry_on(now, claims, plan)

    def _sleep_until(self, when: datetime) -> bool:
        """Wait until ``when`` or a wake-up (:meth:`wake`); True when woken."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._woken, timeout=(when - self.clock.now()).total_seconds()
            )
            woken, self._woken = self._woken, False
        return woken

    def _place(self, claim: Claim) -> None:
        try:
            # provider_for(claim.provider), without the call when there is one provider
            provider = (
                self._provider if self._providers is None else self.provider_for(claim.provider)
            )
            placed = provider.place_call(claim.request)
        except ProviderError as exc:
            self._dial_failed(claim, exc)
            return
        except Exception as exc:  # a bug or transport error: the fate is unknown
            self.log.exception("place_call_crashed", attempt=claim.attempt.id)
            self._dial_failed(claim, ProviderUnavailable(repr(exc), placed=None))
            return
        self.calls_placed += 1
        if self._defer_records:
            self._placements.append((self.clock.now(), claim, placed))
        else:
            self.core.record_placed(self.clock.now(), claim, placed)
        if self.log is not self._debug_dropped_by:
            self._log_placed(claim, placed)

    def _flush_placed(self) -> None:
        """Record the placements not yet recorded (one transaction), before anything
        else touches the repository, so records keep the order things happened in."""
        if self._placements:
            placements, self._placements = self._placements, []
            self.core.record_placements(placements)

    def _dial_failed(self, claim: Claim, exc: ProviderError) -> None:
        self._flush_placed()
        now = self.clock.now()
        decision = self.core.record_dial_error(now, claim, exc)
        self._dial_error_recorded(claim, exc, decision)

    def _reconcile(self, now: datetime) -> None:
        todo = self._reconcile_todo(now)
        if todo is None:
            return
        due, periodic = todo
        unfinished = self.core.unfinished(now) if periodic else []
        for aid, (name, external) in _reconcile_targets(unfinished, due).items():
            self._reconcile_one(now, aid, name, external)

    def _reconcile_one(
        self, now: datetime, attempt_id: str, provider_name: str | None, external: str | None
    ) -> None:
        view: CallEvent | ProviderError | None
        try:
            provider = self.provider_for(provider_name)
            view = provider.fetch_call(attempt_id=attempt_id, external_call_id=external)
        except ProviderError as exc:
            view = exc
        try:
            decision = self.core.record_reconcile(now, attempt_id, view)
        except _LOST_RACE as exc:
            self._reconcile_lost(now, attempt_id, exc)
            return
        self._reconciled(attempt_id, decision)

"""Dialer worker processes for the multi-process tests (started with ``spawn``).

Each worker is a separate process with its own :class:`~outdial.sql.SqlRepository`,
its own :class:`~outdial.simulation.SimulatedProvider` on the real clock (calls
last milliseconds) and a :class:`~outdial.sql.Heartbeat`. What the workers share
is the database, and a *ledger*: the provider's own records (a SQLite file)
written before a call is placed, so that any worker can ask "the provider" about
a call another worker placed, as it could ask Twilio. That is what makes the
crash test honest: when a worker dies, the survivors learn from the ledger
whether its last dials reached the provider, instead of guessing.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from datetime import datetime, timedelta, timezone

import attrs
import structlog

from outdial.engine import Engine, EngineConfig
from outdial.outcomes import CallOutcome
from outdial.ports import CallEvent, CallStatus, DialRequest, PlacedCall, SystemClock
from outdial.simulation import SimulatedProvider, SimulationProfile, Uniform

UTC = timezone.utc

#: Calls that last a few milliseconds (the "fast simulated provider").
FAST_PROFILE = SimulationProfile(
    ring_seconds=Uniform(0.002, 0.006),
    voicemail_after_seconds=Uniform(0.003, 0.008),
    no_answer_seconds=Uniform(0.004, 0.010),
    fail_seconds=Uniform(0.001, 0.003),
    talk_seconds=Uniform(0.004, 0.012),
    voicemail_seconds=Uniform(0.002, 0.006),
)
#: No simulated call lasts longer than this (ring + talk at most).
LONGEST_CALL = 0.05


class Ledger:
    """The simulated provider's records of the calls it accepted, shared by processes."""

    def __init__(self, path: str) -> None:
        self._conn = sqlite3.connect(
            path, timeout=60, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=OFF")
        self._lock = threading.Lock()

    @classmethod
    def create(cls, path: str) -> Ledger:
        ledger = cls(path)
        ledger._conn.execute(
            "CREATE TABLE IF NOT EXISTS calls (attempt_id TEXT PRIMARY KEY, phone TEXT NOT NULL,"
            " worker TEXT NOT NULL, placed_at REAL NOT NULL)"
        )
        return ledger

    def placed(self, attempt_id: str, phone: str, worker: str, at: float) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO calls VALUES (?, ?, ?, ?)", (attempt_id, phone, worker, at)
            )

    def lookup(self, attempt_id: str) -> tuple[str, float] | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT worker, placed_at FROM calls WHERE attempt_id = ?", (attempt_id,)
            ).fetchone()
        return None if row is None else (str(row[0]), float(row[1]))

    def calls(self) -> list[tuple[str, str, str, float]]:
        with self._lock:
            return [
                (str(a), str(p), str(w), float(t))
                for a, p, w, t in self._conn.execute("SELECT * FROM calls")
            ]

    def close(self) -> None:
        self._conn.close()


class LedgerProvider:
    """A :class:`SimulatedProvider` that writes each call to the shared ledger before
    placing it, and answers ``fetch_call`` for calls other workers placed.

    Every worker's simulator numbers its calls from 1, so call ids are qualified
    with the worker's name, as a real provider's ids are unique across its API.
    """

    name = "simulated"

    def __init__(self, inner: SimulatedProvider, ledger: Ledger, worker: str) -> None:
        self.inner = inner
        self.ledger = ledger
        self.worker = worker
        self._prefix = f"{worker}/"

    def _ours(self, external_call_id: str | None) -> str | None:
        if external_call_id is None or not external_call_id.startswith(self._prefix):
            return None
        return external_call_id[len(self._prefix) :]

    def _qualified(self, event: CallEvent) -> CallEvent:
        if event.external_call_id is None:
            return event
        return attrs.evolve(event, external_call_id=self._prefix + event.external_call_id)

    def place_call(self, request: DialRequest) -> PlacedCall:
        self.ledger.placed(request.attempt_id, request.to, self.worker, time.time())
        placed = self.inner.place_call(request)
        return attrs.evolve(placed, external_call_id=self._prefix + placed.external_call_id)

    def cancel_call(self, external_call_id: str) -> None:
        self.inner.cancel_call(self._ours(external_call_id) or external_call_id)

    def fetch_call(self, *, attempt_id: str, external_call_id: str | None) -> CallEvent | None:
        view = self.inner.fetch_call(
            attempt_id=attempt_id, external_call_id=self._ours(external_call_id)
        )
        if view is not None:
            return self._qualified(view)
        found = self.ledger.lookup(attempt_id)
        if found is None:
            return None  # the provider never had this call
        _worker, placed_at = found
        ended = placed_at + LONGEST_CALL
        if time.time() < ended:
            return CallEvent(self.name, CallStatus.RINGING, attempt_id=attempt_id)
        # Placed by a worker that is gone: the call is long over; nobody heard how.
        return CallEvent(
            self.name,
            CallStatus.ENDED,
            attempt_id=attempt_id,
            external_call_id=external_call_id,
            outcome=CallOutcome.NO_ANSWER,
            occurred_at=datetime.fromtimestamp(ended, UTC),
            duration_seconds=0.0,
        )

    def next_event_at(self) -> datetime | None:
        return self.inner.next_event_at()

    def due_events(self, now: datetime) -> list[CallEvent]:
        return [self._qualified(event) for event in self.inner.due_events(now)]


@attrs.frozen
class WorkerSpec:
    url: str
    ledger: str
    worker_id: str
    campaign_id: str
    seed: int
    deadline: float  # time.time() after which the worker gives up
    dial_confirm_timeout: float = 1.0
    call_timeout: float = 2.0


def engine_config(spec: WorkerSpec) -> EngineConfig:
    return EngineConfig(
        dial_confirm_timeout=timedelta(seconds=spec.dial_confirm_timeout),
        call_timeout=timedelta(seconds=spec.call_timeout),
        give_up_unknown_after=timedelta(seconds=spec.call_timeout * 2),
        unknown_fate_delay=timedelta(milliseconds=100),
        provider_retry_delay=timedelta(milliseconds=50),
    )


def run_worker(spec: WorkerSpec) -> None:
    """A worker's main: dial until the campaign is over (or the deadline)."""
    from outdial.dialer import Dialer
    from outdial.sql import Heartbeat, connect

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    clock = SystemClock()
    repo = connect(spec.url)
    ledger = Ledger(spec.ledger)
    provider = LedgerProvider(
        SimulatedProvider(clock, FAST_PROFILE, seed=spec.seed), ledger, spec.worker_id
    )
    dialer = Dialer(
        repo,
        provider,
        clock=clock,
        engine=Engine(engine_config(spec)),
        worker_id=spec.worker_id,
        rng=random.Random(spec.seed),
        reconcile_interval=timedelta(milliseconds=300),
    )
    step = timedelta(milliseconds=50)
    next_check = 0.0
    with Heartbeat(repo, spec.worker_id, interval=timedelta(milliseconds=200)):
        while time.time() < spec.deadline:
            summary = dialer.run_until_idle(until=clock.now() + step)
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + 0.1
                with repo.transaction() as uow:
                    campaign = uow.get_campaign(spec.campaign_id)
                if campaign.status.final and campaign.counters.in_flight == 0:
                    break
            if not (summary.calls_placed or summary.events_applied):
                time.sleep(0.002)
    repo.close()
    ledger.close()

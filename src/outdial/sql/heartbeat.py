"""A worker's heartbeat, kept by a background thread.

Workers that share a PostgreSQL database tell each other they are alive through
``outdial_workers``: :class:`Heartbeat` beats every ``interval`` while the
worker runs; :meth:`SqlRepository.dead_workers
<outdial.sql.repository.SqlRepository.dead_workers>` lists the workers whose
last beat is older than a timeout, whose unfinished attempts are then
reconciled with the provider (never put back to pending blindly).
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import TYPE_CHECKING

from outdial.errors import ConfigurationError, RepositoryError
from outdial.ports import Clock, SystemClock

if TYPE_CHECKING:
    from outdial.sql.repository import SqlRepository

__all__ = ["Heartbeat"]


class Heartbeat:
    """Beat for ``worker_id`` every ``interval`` in a daemon thread.

    ``start()`` beats once at once (so the worker is registered before it claims
    anything), ``stop()`` ends the thread and, with ``forget=True``, removes the
    worker (a clean shutdown). Also a context manager. A beat that fails (the
    database is briefly unreachable) is counted in :attr:`failures` and retried
    at the next interval.
    """

    def __init__(
        self,
        repository: SqlRepository,
        worker_id: str,
        *,
        interval: timedelta = timedelta(seconds=5),
        clock: Clock | None = None,
    ) -> None:
        if interval <= timedelta(0):
            raise ConfigurationError("interval", interval, "must be positive")
        self.repository = repository
        self.worker_id = worker_id
        self.interval = interval
        self.clock: Clock = clock or SystemClock()
        self.beats = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        """Record one heartbeat now."""
        self.repository.heartbeat(self.worker_id, self.clock.now())
        self.beats += 1

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("heartbeat already started")
        self.beat()
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"outdial-heartbeat-{self.worker_id}", daemon=True
        )
        self._thread.start()

    def stop(self, *, forget: bool = False) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if forget:
            self.repository.forget_worker(self.worker_id)

    def __enter__(self) -> Heartbeat:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(forget=True)

    def _run(self) -> None:
        wait = self.interval.total_seconds()
        while not self._stop.wait(wait):
            try:
                self.beat()
            except RepositoryError:
                self.failures += 1

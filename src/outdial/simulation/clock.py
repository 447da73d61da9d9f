"""A clock that only moves when it is told to.

:class:`VirtualClock` satisfies :class:`outdial.ports.Clock`. Tests and
simulations hand it to runners and providers instead of the system clock and
move time forward themselves, so a campaign that lasts days runs in
milliseconds and every run is reproducible.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from outdial._time import UTC, to_utc

__all__ = ["VirtualClock"]

_ZERO = timedelta(0)


class VirtualClock:
    """A settable clock: ``now()`` returns the current virtual instant (in UTC).

    Time only moves forward, by :meth:`advance` or :meth:`advance_to`; asking
    it to go backwards raises ``ValueError`` naming both instants. Naive
    datetimes are refused with :class:`~outdial.errors.NaiveDatetimeError`.
    Every method is safe to call from several threads at once.

    >>> from datetime import datetime, timedelta, timezone
    >>> clock = VirtualClock(datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc))
    >>> clock.advance(timedelta(minutes=5)).isoformat()
    '2026-03-02T09:05:00+00:00'
    >>> clock.monotonic()
    300.0
    """

    __slots__ = ("_lock", "_now", "_start")

    def __init__(self, start: datetime) -> None:
        self._start = to_utc(start, "VirtualClock(start)")
        self._now = self._start
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"VirtualClock(now={self._now.isoformat()})"

    @property
    def start(self) -> datetime:
        """The instant the clock was created at (UTC)."""
        return self._start

    def now(self) -> datetime:
        """The current virtual instant, an aware datetime in UTC."""
        return self._now

    def monotonic(self) -> float:
        """Seconds elapsed since :attr:`start`, as a float (never decreases)."""
        return (self._now - self._start).total_seconds()

    def advance(self, by: timedelta) -> datetime:
        """Move the clock forward by ``by`` and return the new instant.

        ``by`` may be zero; a negative ``by`` raises ``ValueError``.
        """
        if by < _ZERO:
            raise ValueError(f"cannot advance a VirtualClock by a negative amount ({by})")
        with self._lock:
            self._now = self._now + by
            return self._now

    def advance_to(self, t: datetime) -> datetime:
        """Move the clock to instant ``t`` and return it (in UTC).

        ``t`` equal to the current instant is a no-op; ``t`` earlier than it
        raises ``ValueError`` naming both instants.
        """
        target = t if t.tzinfo is UTC else to_utc(t, "VirtualClock.advance_to")
        # acquire and release rather than ``with`` (which looks up and binds the lock's
        # __enter__ and __exit__ on every use): a simulation calls this once per event
        lock = self._lock
        lock.acquire()
        try:
            if target < self._now:
                raise ValueError(
                    f"VirtualClock cannot go backwards: it is {self._now.isoformat()}, "
                    f"asked to move to {target.isoformat()}"
                )
            self._now = target
            return target
        finally:
            lock.release()

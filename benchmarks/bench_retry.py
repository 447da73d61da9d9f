"""Throughput of retry decisions.

``run()`` returns ``(what, figure)`` rows:

* ``RetryPolicy.decide`` with exponential backoff, full jitter and a rolling
  cap of 3 per 24 h (the cap is full half of the time, so it pushes the retry);
* ``land_in_window`` moving Friday-evening retries to Monday 09:00 New York,
  when ``outdial.calendar.BusinessHours`` exists.

Run it as a script to print the rows: ``python benchmarks/bench_retry.py``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from outdial.outcomes import CallOutcome
from outdial.retry import (
    Exponential,
    Jitter,
    RetryAt,
    RetryDecision,
    RetryPolicy,
    RollingCap,
    land_in_window,
)

UTC = timezone.utc


def _per_second(work: Callable[[], object], repeat: int) -> float:
    """Best of three timings of ``repeat`` calls, as calls per second."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(repeat):
            work()
        best = min(best, time.perf_counter() - started)
    return repeat / best


def _decide_rate(repeat: int) -> float:
    policy = RetryPolicy(
        max_attempts=5,
        backoff=Exponential(base=timedelta(minutes=1), cap=timedelta(hours=1), jitter=Jitter.FULL),
        caps=(RollingCap(max_attempts=3, window=timedelta(hours=24)),),
    )
    rng = random.Random(2026)
    start = datetime(2026, 3, 6, 14, tzinfo=UTC)
    histories = [
        [start],  # cap not full
        [start - timedelta(hours=3), start - timedelta(hours=2), start],  # cap full
    ]
    outcomes = [CallOutcome.NO_ANSWER, CallOutcome.BUSY]
    state = {"i": 0}

    def one() -> RetryDecision:
        i = state["i"] = state["i"] + 1
        attempts = histories[i & 1]
        return policy.decide(
            outcome=outcomes[i & 1],
            attempts=attempts,
            ended_at=attempts[-1] + timedelta(seconds=40),
            rng=rng,
        )

    assert isinstance(one(), RetryAt)
    return _per_second(one, repeat)


def _land_rate(repeat: int) -> float | None:
    try:
        from outdial.calendar import BusinessHours
    except ImportError:
        return None
    calendar = BusinessHours.weekly("America/New_York", {"mon-fri": [("09:00", "17:00")]})
    friday_evening = datetime(2026, 3, 6, 23, 30, tzinfo=UTC)  # 18:30 New York
    decision = RetryAt(at=friday_evening, delay=timedelta(minutes=30), reason="bench")
    landed = land_in_window(decision, calendar)
    assert isinstance(landed, RetryAt)
    assert landed.at == datetime(2026, 3, 9, 13, tzinfo=UTC)  # Monday 09:00 EDT
    return _per_second(lambda: land_in_window(decision, calendar), repeat)


def run(repeat: int = 20_000) -> list[tuple[str, str]]:
    """Measure and return ``(what, figure)`` rows."""
    rows = [
        (
            "RetryPolicy.decide (exponential + full jitter + rolling cap 3/24h)",
            f"{_decide_rate(repeat):,.0f} decisions/s",
        )
    ]
    land = _land_rate(repeat)
    rows.append(
        (
            "land_in_window (Friday evening -> Monday 09:00 New York)",
            "skipped: outdial.calendar.BusinessHours not available"
            if land is None
            else f"{land:,.0f} decisions/s",
        )
    )
    return rows


if __name__ == "__main__":
    for what, figure in run():
        print(f"{what:<72} {figure}")

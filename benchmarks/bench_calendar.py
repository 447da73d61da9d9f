"""Throughput of the business-hours calendar.

Run: ``.venv/bin/python benchmarks/bench_calendar.py``. The calendar is a New York
schedule open every day in three slots, with 20 blackout dates (20-29 December
in a row, plus ten scattered), so ``next_open`` from 9 December 20:00 crosses a
three-week gap. Instants are drawn from a seeded RNG over 2026.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from outdial.calendar import BusinessHours

UTC = timezone.utc
NEW_YORK = ZoneInfo("America/New_York")
CALLS = 200_000


def make_calendar() -> BusinessHours:
    christmas_run = [date(2026, 12, 10) + timedelta(days=k) for k in range(20)]
    return BusinessHours.weekly(
        "America/New_York",
        {"daily": [("08:00", "11:00"), ("12:00", "15:00"), ("16:00", "20:00")]},
        blackout_dates=christmas_run,
    )


def make_scattered_calendar() -> BusinessHours:
    scattered = [date(2026, 1, 1) + timedelta(days=18 * k) for k in range(20)]
    return BusinessHours.weekly(
        "America/New_York",
        {"daily": [("08:00", "11:00"), ("12:00", "15:00"), ("16:00", "20:00")]},
        blackout_dates=scattered,
    )


def rate(function: Callable[[datetime], object], instants: list[datetime]) -> float:
    """Calls per second of ``function`` over ``instants`` (best of three runs)."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for instant in instants:
            function(instant)
        best = min(best, time.perf_counter() - started)
    return len(instants) / best


def run() -> list[tuple[str, str]]:
    """Measure and return ``(label, figure)`` rows."""
    calendar = make_calendar()
    scattered = make_scattered_calendar()
    rng = random.Random(20260101)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    instants = [start + timedelta(seconds=rng.randrange(365 * 86400)) for _ in range(CALLS)]

    three_weeks = datetime(2026, 12, 9, 20, 0, tzinfo=NEW_YORK)  # next open: 30 Dec 08:00
    one_minute = datetime(2026, 6, 15, 7, 59, tzinfo=NEW_YORK)  # next open: 08:00
    gap = calendar.next_open(three_weeks)
    assert gap is not None
    assert gap - three_weeks.astimezone(UTC) > timedelta(days=20)
    assert calendar.next_open(one_minute) == one_minute + timedelta(minutes=1)
    short = CALLS // 4

    rows = [
        ("next_open, random instants (scattered blackouts)", rate(scattered.next_open, instants)),
        ("next_open, random instants (blackouts in a row)", rate(calendar.next_open, instants)),
        ("is_open, random instants", rate(scattered.is_open, instants)),
        ("next_close, random instants", rate(scattered.next_close, instants[:short])),
        ("next_open across a 1-minute gap", rate(calendar.next_open, [one_minute] * short)),
        ("next_open across a 3-week gap", rate(calendar.next_open, [three_weeks] * short)),
    ]
    return [(label, f"{calls:,.0f} calls/s") for label, calls in rows]


if __name__ == "__main__":
    for label, figure in run():
        print(f"{label:<55} {figure:>20}")

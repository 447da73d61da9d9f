"""Properties of the calendar, checked against a brute-force minute-by-minute model.

The model below reads the wall clock with ``datetime.astimezone`` and the slot
list directly, independently of the calendar's precomputed intervals, segment
tables and searches. Every zone in ZONES has whole-minute offsets, so between
two whole UTC minutes nothing can change: sampling whole minutes is exhaustive.
"""

from __future__ import annotations

import itertools
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from outdial.calendar import BusinessHours, CalendarIntersection, TimeSlot

UTC = timezone.utc
MINUTE = timedelta(minutes=1)
WINDOW_MINUTES = 2 * 24 * 60  # two days, sampled minute by minute

ZONES = [
    "UTC",
    "America/New_York",
    "Europe/London",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "America/Santiago",
    "America/Havana",
    "America/Phoenix",
    "Asia/Kolkata",
    "Pacific/Chatham",
    "Asia/Tokyo",
]
# Days where some zone above changes its offset, so windows often straddle one.
TRANSITION_DAYS = [
    date(2026, 3, 8),
    date(2026, 3, 29),
    date(2026, 4, 5),
    date(2026, 9, 6),
    date(2026, 9, 27),
    date(2026, 10, 4),
    date(2026, 10, 25),
    date(2026, 11, 1),
    date(2026, 6, 15),
]


@attrs.frozen
class Spec:
    """A schedule as plain minutes: weekday -> [(start, end)], end 0 meaning 24:00."""

    zone: str
    slots: tuple[tuple[tuple[int, int], ...], ...]
    blackout: frozenset[date]
    tz: ZoneInfo = attrs.field(init=False, eq=False, repr=False)

    @tz.default
    def _tz(self) -> ZoneInfo:
        return ZoneInfo(self.zone)

    def build(self) -> BusinessHours:
        return BusinessHours(
            timezone=self.zone,
            schedule={
                day: [TimeSlot(time(s // 60, s % 60), time(e // 60, e % 60)) for s, e in slots]
                for day, slots in enumerate(self.slots)
            },
            blackout_dates=self.blackout,
        )

    def is_open(self, instant: datetime) -> bool:
        """The definition, read literally: local wall clock, slot of the day or the eve."""
        wall = instant.astimezone(self.tz)
        if wall.date() in self.blackout:
            return False
        minute = wall.hour * 60 + wall.minute
        day = wall.weekday()
        for start, end in self.slots[day]:
            last = end or 1440
            if start < last and start <= minute < last:
                return True
            if last <= start and minute >= start:  # overnight slot, first part
                return True
        for start, end in self.slots[(day - 1) % 7]:
            last = end or 1440
            if last <= start and last != 1440 and minute < last:  # eve's overnight slot
                return True
        return False


def slot_pairs() -> st.SearchStrategy[tuple[int, int]]:
    """(start, end) in minutes: any length, so some cross midnight; (0, 0) is all day."""
    return st.builds(
        lambda start, length: (start * 5, (start * 5 + length * 5) % 1440),
        st.integers(0, 287),
        st.integers(1, 287),
    ) | st.just((0, 0))


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    days = [tuple(draw(st.lists(slot_pairs(), max_size=3))) for _ in range(7)]
    near = st.builds(
        lambda day, k: day + timedelta(days=k),
        st.sampled_from(TRANSITION_DAYS),
        st.integers(-2, 3),
    )
    return Spec(
        zone=draw(st.sampled_from(ZONES)),
        slots=tuple(days),
        blackout=draw(st.frozensets(near, max_size=4)),
    )


@st.composite
def instants(draw: st.DrawFn, whole_minute: bool = False) -> datetime:
    day = draw(st.sampled_from(TRANSITION_DAYS))
    minutes = draw(st.integers(-36 * 60, 6 * 60))  # the window then spans the whole day
    seconds = 0 if whole_minute else draw(st.integers(0, 59))
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(
        minutes=minutes, seconds=seconds
    )


def minute_grid(start: datetime, count: int) -> list[datetime]:
    """``count`` whole UTC minutes from the first one at or after ``start``."""
    first = start.replace(second=0, microsecond=0)
    if first < start:
        first += MINUTE
    return [first + k * MINUTE for k in range(count)]


@settings(max_examples=40, deadline=None)
@given(spec=specs(), start=instants(whole_minute=True))
def test_is_open_agrees_with_a_minute_by_minute_scan(spec: Spec, start: datetime) -> None:
    hours = spec.build()
    grid = minute_grid(start, WINDOW_MINUTES)

    mismatches = [t for t in grid if hours.is_open(t) != spec.is_open(t)]

    assert mismatches == []


@settings(max_examples=60, deadline=None)
@given(spec=specs(), start=instants())
def test_next_open_is_open_and_nothing_before_it_is(spec: Spec, start: datetime) -> None:
    hours = spec.build()

    opening = hours.next_open(start)

    scan = [start, *minute_grid(start, WINDOW_MINUTES)]
    if opening is None:
        assert not any(spec.is_open(t) for t in scan)
        return
    assert opening >= start
    assert opening.tzinfo is UTC
    assert spec.is_open(opening)
    assert hours.is_open(opening)
    assert not any(spec.is_open(t) for t in scan if t < opening)
    if spec.is_open(start):
        assert opening == start


@settings(max_examples=50, deadline=None)
@given(spec=specs(), start=instants())
def test_next_close_ends_the_current_or_next_open_interval(spec: Spec, start: datetime) -> None:
    hours = spec.build()

    opening, closing = hours.next_open(start), hours.next_close(start)

    if opening is None:
        assert closing is None
        return
    if closing is None:  # open around the clock for the whole horizon
        assert all(spec.is_open(t) for t in minute_grid(opening, WINDOW_MINUTES))
        return
    assert closing > opening
    assert not spec.is_open(closing)
    assert spec.is_open(closing - MINUTE)
    assert all(spec.is_open(t) for t in minute_grid(opening, WINDOW_MINUTES) if t < closing)


@settings(max_examples=40, deadline=None)
@given(spec=specs(), start=instants(whole_minute=True))
def test_open_intervals_are_exactly_the_open_minutes(spec: Spec, start: datetime) -> None:
    hours = spec.build()
    end = start + WINDOW_MINUTES * MINUTE

    intervals = list(hours.open_intervals(start, end))

    for opening, closing in intervals:
        assert start <= opening < closing <= end
    for (_, closing), (opening, _) in itertools.pairwise(intervals):
        assert closing < opening  # sorted, disjoint and never adjacent (maximal)
    covered = [any(a <= t < b for a, b in intervals) for t in minute_grid(start, WINDOW_MINUTES)]
    expected = [spec.is_open(t) for t in minute_grid(start, WINDOW_MINUTES)]
    assert covered == expected


@settings(max_examples=25, deadline=None)
@given(parts=st.lists(specs(), min_size=2, max_size=3), start=instants())
def test_intersection_agrees_with_all_of_its_parts(parts: list[Spec], start: datetime) -> None:
    calendars = [spec.build() for spec in parts]
    both = CalendarIntersection(tuple(calendars))
    scan = [start, *minute_grid(start, WINDOW_MINUTES)]

    def all_open(t: datetime) -> bool:
        return all(spec.is_open(t) for spec in parts)

    for t in scan[::7]:
        assert both.is_open(t) == all_open(t)

    opening = both.next_open(start)
    if opening is None:
        assert not any(all_open(t) for t in scan)
        return
    assert opening >= start
    assert all_open(opening)
    assert not any(all_open(t) for t in scan if t < opening)
    closing = both.next_close(start)
    if closing is not None:
        assert closing > opening
        assert not all_open(closing)
        assert all(all_open(t) for t in minute_grid(opening, WINDOW_MINUTES) if t < closing)

"""Business-hours calendars: when a campaign may call, computed from wall-clock slots.

The model
---------
A :class:`BusinessHours` is a weekly schedule of wall-clock :class:`TimeSlot` s in
one IANA time zone, minus blackout dates and (optionally) public holidays.

* An instant is **open** iff its local wall-clock reading in ``timezone`` lies in a
  slot of the schedule for that local weekday, and its local date is neither a
  blackout date nor a holiday. A slot whose end is not after its start crosses
  midnight: ``22:00-06:00`` on Monday covers Monday 22:00-24:00 and Tuesday
  00:00-06:00. ``end == time(0)`` means 24:00 (``"24:00"`` is accepted when
  parsing), so ``00:00-24:00`` is the whole day. A blackout date or holiday
  closes the whole local day 00:00-24:00, including the after-midnight part of
  the previous day's overnight slot.
* Everything is decided on the **local** wall clock, so daylight-saving time
  falls out of the definition: wall times inside a spring-forward gap never
  happen (a window opening at 02:30 on that day opens when the clock jumps to
  03:00), and on a fall-back day the repeated hour is open twice if it is inside
  a slot (01:00-04:00 lasts 4 h that day, 2 h on the spring-forward day).
* Intervals are half-open ``[open, close)``. Every method refuses a naive
  datetime (:class:`~outdial.errors.NaiveDatetimeError`), and every datetime
  returned is aware and in UTC. Instants are compared as instants (in UTC), never
  as wall-clock readings: 01:30 fold=0 and 01:30 fold=1 are an hour apart.
* ``next_open(t)`` is the earliest open instant ``>= t`` (``t`` itself when open);
  ``next_close(t)`` is the end of the open interval containing ``t`` or, when
  closed, of the next one. Searches look at most :data:`SEARCH_HORIZON` (1,827
  days, five years) ahead: a calendar that does not open within that stretch is
  treated as never opening (``None``), one that does not close within it as
  never closing (``None``).
* ``enabled=False`` means always open: schedule, blackout dates and holidays
  are all ignored (as the seed's ``isWithinBusinessHours`` does).

Calendars compose: ``a.intersect(b)`` is a :class:`CalendarIntersection`, open iff
every part is open, with the same methods (see its docstring for how its search
is bounded).

Performance: nothing scans minutes. Each schedule is reduced at construction to
sorted per-weekday intervals; runs of blackout dates are jumped over in one step;
UTC offset changes are found once per zone and 128-day block and cached.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import re
import typing
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
import cattrs

from outdial._time import UTC, require_aware
from outdial.errors import (
    ConfigurationError,
    InvalidBusinessHours,
    MissingExtra,
    UnknownTimeZone,
)

__all__ = [
    "ALWAYS_OPEN",
    "SEARCH_HORIZON",
    "BusinessHours",
    "Calendar",
    "CalendarIntersection",
    "HolidayCalendar",
    "TimeSlot",
    "Weekday",
]

#: How far ahead ``next_open`` / ``next_close`` look before answering ``None``.
SEARCH_HORIZON = timedelta(days=1827)

# Instants are handled internally as integer microseconds since 1970-01-01 UTC;
# wall-clock readings as the same count on the local (naive) time line.
_ONE_US = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = 1_000_000
_MINUTE = 60 * _SECOND
_DAY = 1440 * _MINUTE
_WEEK = 7 * _DAY
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday
_HORIZON = SEARCH_HORIZON // _ONE_US
# Keep every computed instant inside what datetime can represent, whatever the offset.
_MIN_US = (datetime(1, 1, 3, tzinfo=UTC) - _EPOCH) // _ONE_US
_MAX_US = (datetime(9999, 12, 29, tzinfo=UTC) - _EPOCH) // _ONE_US
#: Rounds of the intersection's fixed-point search before it gives up (``None``).
_MAX_ROUNDS = 100_000

_DAY_GROUPS: dict[str, tuple[int, ...]] = {
    "weekdays": (0, 1, 2, 3, 4),
    "weekday": (0, 1, 2, 3, 4),
    "weekend": (5, 6),
    "weekends": (5, 6),
    "daily": (0, 1, 2, 3, 4, 5, 6),
    "everyday": (0, 1, 2, 3, 4, 5, 6),
}
_CONFIG_KEYS = ("enabled", "timezone", "schedule", "blackout_dates", "holidays")
_HHMM = re.compile(r"(\d{1,2}):(\d{2})(?::00)?")


class Weekday(enum.IntEnum):
    """A day of the week, numbered as :meth:`datetime.date.weekday` (Monday is 0)."""

    MONDAY = 0
    TUESDAY = 1
    WEDNESDAY = 2
    THURSDAY = 3
    FRIDAY = 4
    SATURDAY = 5
    SUNDAY = 6

    @classmethod
    def parse(cls, value: str | int, field: str = "") -> Weekday:
        """The weekday named by ``value``: a Weekday, 0-6, or a name or 3+ letter prefix.

        Names are case-insensitive (``"monday"``, ``"Mon"``, ``"thurs"``). Anything
        else raises :class:`~outdial.errors.InvalidBusinessHours` naming ``field``.
        """
        if isinstance(value, Weekday):
            return value
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 6:
            return cls(value)
        if isinstance(value, str):
            text = value.strip().lower()
            if len(text) >= 3:
                for day in cls:
                    if day.name.lower().startswith(text):
                        return day
        raise InvalidBusinessHours(field, value, "is not a day of the week")


def _format_time(value: time, *, end: bool = False) -> str:
    if end and value == time(0):
        return "24:00"
    return f"{value.hour:02d}:{value.minute:02d}"


def _parse_hhmm(text: object, field: str, *, end: bool) -> int:
    """Minutes since midnight for ``"HH:MM"`` (``"24:00"`` -> 1440, only as an end)."""
    match = _HHMM.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidBusinessHours(field, text, "is not HH:MM")
    hour, minute = int(match[1]), int(match[2])
    if end and (hour, minute) == (24, 0):
        return 1440
    if hour > 23 or minute > 59:
        if (hour, minute) == (24, 0):
            raise InvalidBusinessHours(
                field, text, "is not a start time (24:00 can only end a slot)"
            )
        raise InvalidBusinessHours(field, text, "is not HH:MM")
    return hour * 60 + minute


def _check_clock_time(instance: TimeSlot, attribute: attrs.Attribute[time], value: time) -> None:
    if not isinstance(value, time):
        raise InvalidBusinessHours(attribute.name, value, "is not a datetime.time")
    if value.tzinfo is not None:
        raise InvalidBusinessHours(attribute.name, value, "is a wall-clock time: drop its tzinfo")
    if value.second or value.microsecond:
        raise InvalidBusinessHours(attribute.name, value, "is not a whole minute")


@attrs.frozen
class TimeSlot:
    """A wall-clock slot ``[start, end)`` of one weekday, in whole minutes.

    ``end == time(0)`` means midnight at the end of the day (24:00). When ``end``
    is not after ``start`` the slot crosses midnight: ``22:00-06:00`` covers its
    day from 22:00 to 24:00 and the next day from 00:00 to 06:00.
    ``TimeSlot(time(0), time(0))`` is the whole day; any other ``start == end``
    is refused as empty.
    """

    start: time = attrs.field(validator=_check_clock_time)
    end: time = attrs.field(validator=_check_clock_time)

    def __attrs_post_init__(self) -> None:
        if self.start == self.end and self.start != time(0):
            raise InvalidBusinessHours("", str(self), "is empty: start equals end")

    @classmethod
    def parse(cls, start: str, end: str, field: str = "") -> TimeSlot:
        """A slot from ``"HH:MM"`` texts; ``end`` may be ``"24:00"``.

        Errors are :class:`~outdial.errors.InvalidBusinessHours` whose field is
        ``{field}.start``, ``{field}.end`` or ``field`` itself (empty slot), e.g.
        ``schedule.monday[0].start: '25:00' is not HH:MM``.
        """
        prefix = f"{field}." if field else ""
        first = _parse_hhmm(start, f"{prefix}start", end=False)
        last = _parse_hhmm(end, f"{prefix}end", end=True)
        if first == last:  # "00:00"-"24:00" is the whole day; "00:00"-"00:00" is empty
            raise InvalidBusinessHours(field, f"{start}-{end}", "is empty: start equals end")
        return cls(time(first // 60, first % 60), time(last // 60 % 24, last % 60))

    @property
    def crosses_midnight(self) -> bool:
        """True when part of the slot lies on the next day (e.g. ``22:00-06:00``)."""
        return self._minutes()[1] > 1440

    def _minutes(self) -> tuple[int, int]:
        """``(start, end)`` in minutes from the slot day's midnight; ``end`` may exceed 1440."""
        first = self.start.hour * 60 + self.start.minute
        last = self.end.hour * 60 + self.end.minute or 1440
        if last <= first:
            last += 1440
        return first, last

    def __str__(self) -> str:
        return f"{_format_time(self.start)}-{_format_time(self.end, end=True)}"


# -- holidays ------------------------------------------------------------------------


def _country_code(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidBusinessHours("country", value, "is not a country code (e.g. 'US')")
    return value.strip().upper()


def _check_subdivision(
    instance: HolidayCalendar, attribute: attrs.Attribute[str | None], value: str | None
) -> None:
    if value is not None and not (isinstance(value, str) and value.strip()):
        raise InvalidBusinessHours("subdivision", value, "is not a subdivision code (e.g. 'CA')")


@attrs.frozen
class HolidayCalendar:
    """Public holidays of a country (and subdivision) from the ``holidays`` package.

    ``day in calendar`` tells whether a local date is a public holiday. Holidays
    are loaded lazily, one year at a time, and cached. Pass a *local date*: a
    datetime is refused, because the ``holidays`` package reduces it with
    ``.date()`` without converting its zone. When ``holidays`` is installed the
    country and subdivision are checked at construction; when it is not,
    membership tests raise :class:`~outdial.errors.MissingExtra`.
    """

    country: str = attrs.field(converter=_country_code)
    subdivision: str | None = attrs.field(default=None, validator=_check_subdivision)
    _years: dict[int, frozenset[date]] = attrs.field(factory=dict, init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        try:
            import holidays
        except ImportError:
            return  # checked when first used, which raises MissingExtra
        try:
            holidays.country_holidays(self.country, subdiv=self.subdivision)
        except NotImplementedError:
            if self.country not in holidays.list_supported_countries():
                raise InvalidBusinessHours(
                    "country", self.country, "is not a country the holidays package knows"
                ) from None
            raise InvalidBusinessHours(
                "subdivision",
                self.subdivision,
                f"is not a subdivision of {self.country} the holidays package knows",
            ) from None

    def __contains__(self, day: date) -> bool:
        if isinstance(day, datetime):
            raise TypeError(
                "pass a local date, not a datetime: convert the instant to the calendar's "
                "zone and take .date()"
            )
        days = self._years.get(day.year)
        if days is None:
            days = self._load(day.year)
        return day in days

    def _load(self, year: int) -> frozenset[date]:
        try:
            import holidays
        except ImportError:
            raise MissingExtra("holidays", "holidays") from None
        found = holidays.country_holidays(self.country, subdiv=self.subdivision, years=year)
        days = frozenset(day for day in found if day.year == year)
        self._years[year] = days
        return days


# -- the calendar protocol -------------------------------------------------------------


@typing.runtime_checkable
class Calendar(typing.Protocol):
    """When calls are allowed. Half-open intervals, aware datetimes in, UTC out."""

    def is_open(self, instant: datetime) -> bool:
        """Whether ``instant`` is inside an open interval."""
        ...

    def next_open(self, instant: datetime) -> datetime | None:
        """The earliest open instant ``>= instant``; ``None`` if it never opens."""
        ...

    def next_close(self, instant: datetime) -> datetime | None:
        """End of the open interval containing ``instant`` (or of the next one)."""
        ...

    def open_intervals(self, start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Maximal open intervals clipped to ``[start, end)``, in order."""
        ...

    def intersect(self, *others: Calendar) -> Calendar:
        """A calendar open exactly when this one and all ``others`` are open."""
        ...


def _to_us(instant: datetime, where: str) -> int:
    """Microseconds since the epoch for an aware datetime (naive ones are refused)."""
    return (require_aware(instant, where) - _EPOCH) // _ONE_US


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _walk_intervals(
    calendar: Calendar, start: datetime, end: datetime
) -> Iterator[tuple[datetime, datetime]]:
    """Maximal open intervals of ``calendar`` within ``[start, end)`` (aware, checked)."""
    cursor, stop = start.astimezone(UTC), end.astimezone(UTC)
    while cursor < stop:
        opening = calendar.next_open(cursor)
        if opening is None or opening >= stop:
            return
        closing = calendar.next_close(opening)
        if closing is None or closing >= stop:
            yield opening, stop
            return
        yield opening, closing
        cursor = closing


# -- UTC offsets ------------------------------------------------------------------------

_BLOCK = 128 * _DAY
_SAMPLE_SECONDS = 12 * 3600  # tzdata has no two offset changes within 2 days since 1900


class _ZoneTable:
    """UTC offsets of one zone and the instants where they change, cached per block.

    zoneinfo does not publish its transitions, so each 128-day block is sampled
    every 12 hours and every change of offset is located to the second by
    bisection. ``segment`` answers in O(log n) from the cache.
    """

    __slots__ = ("_blocks", "_zone")

    def __init__(self, zone: ZoneInfo) -> None:
        self._zone = zone
        self._blocks: dict[int, tuple[list[int], list[int]]] = {}

    def segment(self, us: int) -> tuple[int, int]:
        """``(offset, end)``: the UTC offset at ``us`` (µs) and when it may next change.

        ``end`` is the next offset change, or the end of the block when there is
        none in it, so the offset is constant on ``[us, end)``.
        """
        block = us // _BLOCK
        cached = self._blocks.get(block)
        if cached is None:
            cached = self._blocks[block] = self._load(block)
        starts, offsets = cached
        i = bisect_right(starts, us) - 1
        end = starts[i + 1] if i + 1 < len(starts) else (block + 1) * _BLOCK
        return offsets[i], end

    def _offset(self, second: int) -> int:
        second = min(max(second, _MIN_US // _SECOND), _MAX_US // _SECOND)
        local = (_EPOCH + timedelta(seconds=second)).astimezone(self._zone)
        offset = local.utcoffset()
        assert offset is not None  # a ZoneInfo always has one
        return offset // _ONE_US

    def _load(self, block: int) -> tuple[list[int], list[int]]:
        first = block * _BLOCK // _SECOND
        last = first + _BLOCK // _SECOND
        starts, offsets = [block * _BLOCK], [self._offset(first)]
        before, sample = offsets[0], first
        while sample < last:
            after_sample = min(sample + _SAMPLE_SECONDS, last)
            after = self._offset(after_sample)
            if after != before:
                low, high = sample, after_sample  # offset(low) == before != offset(high)
                while high - low > 1:
                    middle = (low + high) // 2
                    if self._offset(middle) == before:
                        low = middle
                    else:
                        high = middle
                if high < last:  # a change exactly at `last` belongs to the next block
                    starts.append(high * _SECOND)
                    offsets.append(after)
                before = after
            sample = after_sample
        return starts, offsets


@functools.cache
def _zone_table(key: str) -> _ZoneTable:
    return _ZoneTable(ZoneInfo(key))


# -- the precomputed form of a schedule ---------------------------------------------------


def _merge(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted union of half-open intervals, adjacent ones joined."""
    merged: list[tuple[int, int]] = []
    for first, last in sorted(intervals):
        if merged and first <= merged[-1][1]:
            if last > merged[-1][1]:
                merged[-1] = (merged[-1][0], last)
        else:
            merged.append((first, last))
    return merged


def _overlap(left: list[tuple[int, int]], right: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Intersection of two sorted lists of disjoint half-open intervals."""
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < len(left) and j < len(right):
        first = max(left[i][0], right[j][0])
        last = min(left[i][1], right[j][1])
        if first < last:
            out.append((first, last))
        if left[i][1] < right[j][1]:
            i += 1
        else:
            j += 1
    return out


class _Index:
    """A BusinessHours reduced to integers; the search algorithms live here.

    Local days are numbered from 1970-01-01 and wall-clock readings are
    microseconds on the local time line, so ``divmod(wall, _DAY)`` gives the local
    day and time of day. ``starts[wd]``/``ends[wd]`` are the merged open intervals
    of weekday ``wd`` (overnight slots already split onto the next day).
    """

    __slots__ = (
        "blackout",
        "enabled",
        "ends",
        "holidays",
        "never_closes",
        "never_opens",
        "patterns",
        "run_ends",
        "skip",
        "starts",
        "table",
        "zone",
    )

    def __init__(self, hours: BusinessHours) -> None:
        self.zone = ZoneInfo(hours.timezone)
        self.table = _zone_table(hours.timezone)
        self.enabled = hours.enabled
        self.holidays = hours.holidays
        per_day: list[list[tuple[int, int]]] = [[] for _ in range(7)]
        for day, slots in hours.schedule.items():
            for slot in slots:
                first, last = slot._minutes()
                per_day[day].append((first, min(last, 1440)))
                if last > 1440:
                    per_day[(day + 1) % 7].append((0, last - 1440))
        merged = [[(a * _MINUTE, b * _MINUTE) for a, b in _merge(d)] for d in per_day]
        self.starts = tuple(tuple(a for a, _ in d) for d in merged)
        self.ends = tuple(tuple(b for _, b in d) for d in merged)
        self.never_opens = not any(self.starts)
        self.blackout = frozenset(d.toordinal() - _EPOCH_ORDINAL for d in hours.blackout_dates)
        self.never_closes = (
            not self.blackout and self.holidays is None and all(d == [(0, _DAY)] for d in merged)
        )
        # skip[wd]: days from weekday wd to the next weekday that has slots.
        self.skip = tuple(
            next((k for k in range(7) if self.starts[(wd + k) % 7]), 0) for wd in range(7)
        )
        # run_ends[b]: first day after blackout day b with slots and not blacked out
        # (filled from the latest blackout backwards, so each run is jumped in one step).
        self.run_ends: dict[int, int] = {}
        if not self.never_opens:
            for blacked in sorted(self.blackout, reverse=True):
                after = blacked + 1
                after += self.skip[(after + _EPOCH_WEEKDAY) % 7]
                self.run_ends[blacked] = self.run_ends.get(after, after)
        self.patterns: dict[int, list[tuple[int, int]]] = {}

    # -- single instants

    def is_holiday(self, day: int) -> bool:
        return self.holidays is not None and date.fromordinal(day + _EPOCH_ORDINAL) in self.holidays

    def is_open_wall(self, wall: int) -> bool:
        day, tod = divmod(wall, _DAY)
        weekday = (day + _EPOCH_WEEKDAY) % 7
        ends = self.ends[weekday]
        k = bisect_right(ends, tod)
        return (
            k < len(ends)
            and self.starts[weekday][k] <= tod
            and day not in self.blackout
            and not self.is_holiday(day)
        )

    def is_open(self, us: int) -> bool:
        if not self.enabled:
            return True
        offset, _ = self.table.segment(us)
        return self.is_open_wall(us + offset)

    # -- searches on the wall-clock line

    def first_day(self, day: int, last: int) -> int | None:
        """The first local day in ``[day, last]`` with slots that is not excluded."""
        skip, blackout = self.skip, self.blackout
        while day <= last:
            day += skip[(day + _EPOCH_WEEKDAY) % 7]
            if day in blackout:
                day = self.run_ends[day]
            elif self.is_holiday(day):
                day += 1
            else:
                return day if day <= last else None
        return None

    def next_open_wall(self, wall: int, limit: int) -> int | None:
        """The earliest open wall reading in ``[wall, limit)``, or None."""
        day, tod = divmod(wall, _DAY)
        last_day = (limit - 1) // _DAY
        while True:
            found = self.first_day(day, last_day)
            if found is None:
                return None
            if found != day:
                day, tod = found, 0
            weekday = (day + _EPOCH_WEEKDAY) % 7
            ends = self.ends[weekday]
            k = bisect_right(ends, tod)
            if k < len(ends):
                start = self.starts[weekday][k]
                candidate = day * _DAY + (start if start > tod else tod)
                return candidate if candidate < limit else None
            day, tod = day + 1, 0

    def run_end_wall(self, wall: int, limit: int) -> int:
        """Where the open run containing wall reading ``wall`` ends (``>= limit`` if later)."""
        day, tod = divmod(wall, _DAY)
        weekday = (day + _EPOCH_WEEKDAY) % 7
        end = self.ends[weekday][bisect_right(self.starts[weekday], tod) - 1]
        while end == _DAY:  # open until midnight: does the next day carry on from 00:00?
            day += 1
            if day * _DAY >= limit:
                return day * _DAY
            weekday = (day + _EPOCH_WEEKDAY) % 7
            starts = self.starts[weekday]
            if not starts or starts[0] != 0 or day in self.blackout or self.is_holiday(day):
                return day * _DAY
            end = self.ends[weekday][0]
        return day * _DAY + end

    # -- searches on the instant line (segments of constant UTC offset)

    def next_open(self, us: int) -> int | None:
        if not self.enabled:
            return us
        if self.never_opens:
            return None
        horizon = min(us + _HORIZON, _MAX_US)
        segment = self.table.segment
        while us < horizon:
            offset, end = segment(us)
            end = min(end, horizon)
            found = self.next_open_wall(us + offset, end + offset)
            if found is not None:
                return found - offset
            us = end
        return None

    def run_end(self, us: int) -> int | None:
        """End of the open interval containing instant ``us`` (which must be open)."""
        horizon = min(us + _HORIZON, _MAX_US)
        while True:
            offset, end = self.table.segment(us)
            end = min(end, horizon)
            found = self.run_end_wall(us + offset, end + offset)
            if found < end + offset:
                return found - offset
            if end >= horizon:
                return None
            us = end
            if not self.is_open(us):
                return us

    def next_close(self, us: int) -> int | None:
        if not self.enabled or self.never_opens or self.never_closes:
            return None
        if not self.is_open(us):
            opening = self.next_open(us)
            if opening is None:
                return None
            us = opening
        return self.run_end(us)

    def utc_pattern(self, offset: int) -> list[tuple[int, int]]:
        """The weekly open intervals, ignoring exclusions, as UTC phases of the week.

        A UTC instant ``us`` has phase ``(us + 3 days) % week`` (Monday 00:00 UTC
        is 0); with a constant ``offset`` its local phase is ``phase + offset``.
        """
        cached = self.patterns.get(offset)
        if cached is None:
            shifted: list[tuple[int, int]] = []
            for weekday in range(7):
                for start, end in zip(self.starts[weekday], self.ends[weekday], strict=True):
                    first = (weekday * _DAY + start - offset) % _WEEK
                    last = first + end - start
                    shifted.append((first, min(last, _WEEK)))
                    if last > _WEEK:
                        shifted.append((0, last - _WEEK))
            cached = self.patterns[offset] = _merge(shifted)
        return cached


# -- attrs converters for BusinessHours ---------------------------------------------------


def _prefixed(err: ConfigurationError, prefix: str) -> ConfigurationError:
    """The same error with its field placed under ``prefix``."""
    field = f"{prefix}.{err.field}" if err.field else prefix
    if isinstance(err, UnknownTimeZone):
        return UnknownTimeZone(err.value, field)
    return type(err)(field, err.value, err.reason)


@contextlib.contextmanager
def _at(prefix: str) -> Iterator[None]:
    """Re-raise configuration errors with their field placed under ``prefix``."""
    try:
        yield
    except ConfigurationError as err:
        raise _prefixed(err, prefix) from None


def _check_zone(name: str | ZoneInfo) -> str:
    if isinstance(name, ZoneInfo) and name.key:
        name = name.key
    if not isinstance(name, str):
        raise UnknownTimeZone(name)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise UnknownTimeZone(name) from None
    return name


def _day_keys(key: object, field: str) -> tuple[Weekday, ...]:
    """Weekdays named by a schedule key: a day, ``"mon-fri"``, ``"weekdays"``, ``"mon,wed"``."""
    if not isinstance(key, str):
        return (Weekday.parse(typing.cast(int, key), field),)
    days: list[Weekday] = []
    for part in key.lower().replace(" ", "").split(","):
        if part in _DAY_GROUPS:
            days.extend(Weekday(d) for d in _DAY_GROUPS[part])
        elif "-" in part:
            first_text, _, last_text = part.partition("-")
            first, last = Weekday.parse(first_text, field), Weekday.parse(last_text, field)
            days.extend(Weekday((first + k) % 7) for k in range((last - first) % 7 + 1))
        else:
            days.append(Weekday.parse(part, field))
    return tuple(days)


def _coerce_slot(item: object) -> TimeSlot:
    if isinstance(item, TimeSlot):
        return item
    if isinstance(item, Mapping):
        return _structure_slot(item, TimeSlot)
    if isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2:
        return TimeSlot.parse(item[0], item[1])
    raise InvalidBusinessHours(
        "", item, "is not a slot: give ('HH:MM', 'HH:MM'), {'start', 'end'} or a TimeSlot"
    )


class _Schedule(Mapping[Weekday, tuple[TimeSlot, ...]]):
    """An immutable, hashable weekly schedule: all seven days, closed ones empty."""

    __slots__ = ("_days",)

    def __init__(self, days: Mapping[Weekday, Sequence[TimeSlot]]) -> None:
        self._days = {day: tuple(days.get(day, ())) for day in Weekday}

    def __getitem__(self, day: Weekday) -> tuple[TimeSlot, ...]:
        return self._days[day]

    def __iter__(self) -> Iterator[Weekday]:
        return iter(self._days)

    def __len__(self) -> int:
        return 7

    def __hash__(self) -> int:
        return hash(tuple(self._days.values()))

    def __repr__(self) -> str:
        shown = {d.name.lower(): [str(s) for s in v] for d, v in self._days.items() if v}
        return f"Schedule({shown!r})"


def _to_schedule(
    value: Mapping[Any, Iterable[TimeSlot | Sequence[str] | Mapping[str, str]]],
) -> Mapping[Weekday, tuple[TimeSlot, ...]]:
    if isinstance(value, _Schedule):
        return value
    if not isinstance(value, Mapping):
        raise InvalidBusinessHours("schedule", value, "is not a mapping of days to slots")
    days: dict[Weekday, list[TimeSlot]] = {}
    for key, slots in value.items():
        label = key.name.lower() if isinstance(key, Weekday) else str(key)
        field = f"schedule.{label}"
        weekdays = _day_keys(key, field)
        if isinstance(slots, (str, Mapping)) or not isinstance(slots, Iterable):
            raise InvalidBusinessHours(field, slots, "is not a list of slots")
        parsed = []
        for i, item in enumerate(slots):
            with _at(f"{field}[{i}]"):
                parsed.append(_coerce_slot(item))
        for weekday in weekdays:
            days.setdefault(weekday, []).extend(parsed)
    return _Schedule(days)


def _to_dates(value: Iterable[date | str]) -> frozenset[date]:
    if isinstance(value, (str, date)) or not isinstance(value, Iterable):
        raise InvalidBusinessHours("blackout_dates", value, "is not a list of dates")
    days = set()
    for i, item in enumerate(value):
        if isinstance(item, datetime):
            raise InvalidBusinessHours(f"blackout_dates[{i}]", item, "is a datetime, not a date")
        if isinstance(item, date):
            days.add(item)
            continue
        try:
            days.add(date.fromisoformat(item))
        except (TypeError, ValueError):
            raise InvalidBusinessHours(
                f"blackout_dates[{i}]", item, "is not a date (YYYY-MM-DD)"
            ) from None
    return frozenset(days)


def _to_holidays(value: HolidayCalendar | str | None) -> HolidayCalendar | None:
    if value is None or isinstance(value, HolidayCalendar):
        return value
    with _at("holidays"):
        return HolidayCalendar(value)


def _check_enabled(instance: BusinessHours, attribute: object, value: object) -> None:
    if not isinstance(value, bool):
        raise InvalidBusinessHours("enabled", value, "is not true or false")


def _flatten(parts: Iterable[Calendar]) -> tuple[Calendar, ...]:
    flat: list[Calendar] = []
    for part in parts:
        if isinstance(part, CalendarIntersection):
            flat.extend(part.parts)
        elif isinstance(part, Calendar):
            flat.append(part)
        else:
            raise TypeError(f"{part!r} is not a Calendar")
    return tuple(flat)


# -- the calendars ---------------------------------------------------------------------------


@attrs.frozen
class BusinessHours:
    """Weekly wall-clock slots in one time zone, minus blackout dates and holidays.

    See the module docstring for the exact semantics. ``schedule`` is an immutable
    mapping holding all seven weekdays (closed ones map to ``()``); the
    constructor also accepts a dict whose keys are weekdays, names (``"mon"``),
    ranges (``"mon-fri"``), groups (``"weekdays"``, ``"weekend"``, ``"daily"``) or
    comma lists, and whose values list :class:`TimeSlot` s or ``("HH:MM", "HH:MM")``
    pairs. ``blackout_dates`` accepts dates or ISO strings; ``holidays`` a
    :class:`HolidayCalendar` or a country code. Invalid values raise
    :class:`~outdial.errors.InvalidBusinessHours` (or
    :class:`~outdial.errors.UnknownTimeZone`) with the dotted field path.
    """

    timezone: str = attrs.field(default="UTC", converter=_check_zone)
    schedule: Mapping[Weekday, tuple[TimeSlot, ...]] = attrs.field(
        factory=dict, converter=_to_schedule
    )
    blackout_dates: frozenset[date] = attrs.field(default=frozenset(), converter=_to_dates)
    holidays: HolidayCalendar | None = attrs.field(default=None, converter=_to_holidays)
    enabled: bool = attrs.field(default=True, validator=_check_enabled)
    _index: _Index = attrs.field(
        init=False, repr=False, eq=False, default=attrs.Factory(_Index, takes_self=True)
    )

    @classmethod
    def always_open(cls, timezone: str = "UTC") -> BusinessHours:
        """A disabled calendar: open at every instant."""
        return cls(timezone=timezone, enabled=False)

    @classmethod
    def weekly(
        cls,
        timezone: str,
        slots: Mapping[Any, Sequence[TimeSlot | Sequence[str]]],
        *,
        blackout_dates: Iterable[date | str] = (),
        holidays: HolidayCalendar | str | None = None,
    ) -> BusinessHours:
        """A schedule from day keys to ``("HH:MM", "HH:MM")`` pairs.

        ``BusinessHours.weekly("America/New_York", {"mon-fri": [("09:00", "17:00")]})``.
        Keys may be days, ranges (``"fri-mon"`` wraps), groups or comma lists; a day
        named by several keys gets all their slots.
        """
        return cls(
            timezone=timezone,
            schedule=slots,
            blackout_dates=blackout_dates,
            holidays=holidays,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BusinessHours:
        """Read a ``business_hours_config`` object (JSON-shaped), refusing bad input.

        Missing keys take the defaults (enabled, ``"UTC"``, no slots, no blackout
        dates, no holidays); missing days are closed. Unknown keys, unknown day
        names, a day given twice, malformed slots and dates, an unknown zone or
        holiday country are refused with the dotted path of the offending field.
        """
        return _converter.structure(data, BusinessHours)

    def to_dict(self) -> dict[str, Any]:
        """The ``business_hours_config`` object: all seven days, JSON-ready.

        ``blackout_dates`` and ``holidays`` are written only when set. Midnight as
        an end is written ``"24:00"``. ``from_dict(to_dict())`` gives back an equal
        calendar.
        """
        result: dict[str, Any] = _converter.unstructure(self)
        return result

    @property
    def zone(self) -> ZoneInfo:
        """The ``ZoneInfo`` of ``timezone``."""
        return self._index.zone

    @property
    def is_empty(self) -> bool:
        """True when enabled without a single slot: the calendar never opens."""
        return self.enabled and self._index.never_opens

    def is_open(self, instant: datetime) -> bool:
        """Whether ``instant`` is in a slot on a local date that is not excluded."""
        return self._index.is_open(_to_us(instant, "BusinessHours.is_open"))

    def next_open(self, instant: datetime) -> datetime | None:
        """The earliest open instant ``>= instant`` (``instant`` itself, in UTC, if open).

        ``None`` when the calendar has no slot or stays closed for
        :data:`SEARCH_HORIZON`. Costs the same for a one-minute or a three-week gap.
        """
        found = self._index.next_open(_to_us(instant, "BusinessHours.next_open"))
        return None if found is None else _from_us(found)

    def next_close(self, instant: datetime) -> datetime | None:
        """End of the open interval containing ``instant`` or, if closed, of the next one.

        ``None`` when it never closes (disabled, open around the clock, or open for
        :data:`SEARCH_HORIZON`) or never opens.
        """
        found = self._index.next_close(_to_us(instant, "BusinessHours.next_close"))
        return None if found is None else _from_us(found)

    def open_intervals(self, start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Maximal open intervals clipped to ``[start, end)``; adjacent ones are merged."""
        require_aware(start, "BusinessHours.open_intervals")
        require_aware(end, "BusinessHours.open_intervals")
        return _walk_intervals(self, start, end)

    def intersect(self, *others: Calendar) -> CalendarIntersection:
        """A :class:`CalendarIntersection` of this calendar and ``others``."""
        return CalendarIntersection((self, *others))


@attrs.frozen
class CalendarIntersection:
    """Open exactly when every part is open (no parts: always open).

    Nested intersections are flattened. ``next_open`` iterates the parts'
    ``next_open`` to a fixed point: the cursor moves to each part's next opening
    until all parts are open at it. When every part is a :class:`BusinessHours`,
    stretches where the parts' UTC offsets stay constant and their weekly slots
    (blackouts and holidays aside) never overlap are skipped whole, so calendars
    that never overlap (08:00-09:00 New York and 08:00-09:00 Tokyo) answer
    ``None`` at once. The search is bounded: ``None`` when no common opening exists
    within :data:`SEARCH_HORIZON` or within 100,000 rounds.
    """

    parts: tuple[Calendar, ...] = attrs.field(converter=_flatten)
    _overlaps: dict[tuple[int | None, ...], bool] = attrs.field(
        factory=dict, init=False, repr=False, eq=False
    )

    def is_open(self, instant: datetime) -> bool:
        """True when every part is open at ``instant``."""
        require_aware(instant, "CalendarIntersection.is_open")
        return all(part.is_open(instant) for part in self.parts)

    def next_open(self, instant: datetime) -> datetime | None:
        """The earliest instant ``>= instant`` at which every part is open."""
        cursor = require_aware(instant, "CalendarIntersection.next_open").astimezone(UTC)
        deadline = _from_us(min(_to_us(cursor, ""), _MAX_US - _HORIZON) + _HORIZON)
        indexes = self._indexes()
        for _ in range(_MAX_ROUNDS):
            if cursor >= deadline:
                return None
            if indexes is not None:
                skip_to = self._skip_without_overlap(indexes, _to_us(cursor, ""))
                if skip_to is not None:
                    cursor = _from_us(skip_to)
                    continue
            moved = False
            for part in self.parts:
                opening = part.next_open(cursor)
                if opening is None:
                    return None
                if opening > cursor:
                    cursor, moved = opening, True
            if not moved:
                return cursor if cursor < deadline else None
        return None

    def next_close(self, instant: datetime) -> datetime | None:
        """The earliest close of any part after the (next) common opening."""
        cursor = require_aware(instant, "CalendarIntersection.next_close").astimezone(UTC)
        if not self.is_open(cursor):
            opening = self.next_open(cursor)
            if opening is None:
                return None
            cursor = opening
        closes = [c for c in (part.next_close(cursor) for part in self.parts) if c is not None]
        return min(closes) if closes else None

    def open_intervals(self, start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Maximal common open intervals clipped to ``[start, end)``."""
        require_aware(start, "CalendarIntersection.open_intervals")
        require_aware(end, "CalendarIntersection.open_intervals")
        return _walk_intervals(self, start, end)

    def intersect(self, *others: Calendar) -> CalendarIntersection:
        """A flat intersection of these parts and ``others``."""
        return CalendarIntersection((*self.parts, *others))

    def _indexes(self) -> tuple[_Index, ...] | None:
        """The parts' indexes when every part is a BusinessHours (enables skipping)."""
        indexes = tuple(p._index for p in self.parts if isinstance(p, BusinessHours))
        return indexes if indexes and len(indexes) == len(self.parts) else None

    def _skip_without_overlap(self, indexes: tuple[_Index, ...], us: int) -> int | None:
        """Where to jump from ``us`` when the weekly patterns cannot overlap, else None."""
        offsets: list[int | None] = []
        stable_until = _MAX_US
        for index in indexes:
            if index.enabled:
                offset, end = index.table.segment(us)
                offsets.append(offset)
                stable_until = min(stable_until, end)
            else:
                offsets.append(None)
        key = tuple(offsets)
        overlaps = self._overlaps.get(key)
        if overlaps is None:
            common = [(0, _WEEK)]
            for index, shift in zip(indexes, offsets, strict=True):
                if shift is not None:
                    common = _overlap(common, index.utc_pattern(shift))
            overlaps = self._overlaps[key] = bool(common)
        return None if overlaps else stable_until


#: A calendar that is always open (a disabled :class:`BusinessHours` in UTC).
ALWAYS_OPEN: Calendar = BusinessHours.always_open()


# -- config (de)serialisation: the seeds' business_hours_config ------------------------------

_converter = cattrs.Converter()


def _structure_slot(value: Any, _: type[TimeSlot]) -> TimeSlot:
    if isinstance(value, TimeSlot):
        return value
    if not isinstance(value, Mapping):
        raise InvalidBusinessHours(
            "", value, 'is not a slot object {"start": "HH:MM", "end": "HH:MM"}'
        )
    for key in value:
        if key not in ("start", "end"):
            raise InvalidBusinessHours(
                str(key), value[key], "is not expected (known keys: start, end)"
            )
    for key in ("start", "end"):
        if key not in value:
            raise InvalidBusinessHours("", dict(value), f"has no {key!r}")
    return TimeSlot.parse(value["start"], value["end"])


def _unstructure_slot(slot: TimeSlot) -> dict[str, str]:
    return {"start": _format_time(slot.start), "end": _format_time(slot.end, end=True)}


def _structure_holidays(value: Any, _: type[HolidayCalendar]) -> HolidayCalendar:
    if isinstance(value, (str, HolidayCalendar)):
        return HolidayCalendar(value) if isinstance(value, str) else value
    if not isinstance(value, Mapping):
        raise InvalidBusinessHours("", value, 'is not {"country": ..., "subdivision": ...}')
    for key in value:
        if key not in ("country", "subdivision"):
            raise InvalidBusinessHours(
                str(key), value[key], "is not expected (known keys: country, subdivision)"
            )
    if "country" not in value:
        raise InvalidBusinessHours("", dict(value), "has no 'country'")
    return HolidayCalendar(value["country"], value.get("subdivision"))


def _unstructure_holidays(calendar: HolidayCalendar) -> dict[str, str]:
    out = {"country": calendar.country}
    if calendar.subdivision is not None:
        out["subdivision"] = calendar.subdivision
    return out


def _structure_schedule(value: Any) -> dict[Weekday, list[TimeSlot]]:
    if not isinstance(value, Mapping):
        raise InvalidBusinessHours("schedule", value, "is not a mapping of day names to slots")
    days: dict[Weekday, list[TimeSlot]] = {}
    for key, slots in value.items():
        field = f"schedule.{key}"
        if not isinstance(key, str):
            raise InvalidBusinessHours(field, key, "is not a day of the week")
        day = Weekday.parse(key, field)
        if day in days:
            raise InvalidBusinessHours(field, key, f"repeats {day.name.lower()}")
        if not isinstance(slots, (list, tuple)):
            raise InvalidBusinessHours(field, slots, "is not a list of slots")
        days[day] = []
        for i, item in enumerate(slots):
            with _at(f"{field}[{i}]"):
                days[day].append(_converter.structure(item, TimeSlot))
    return days


def _structure_business_hours(data: Any, _: type[BusinessHours]) -> BusinessHours:
    if not isinstance(data, Mapping):
        raise InvalidBusinessHours(
            "", data, "is not a business-hours object (enabled, timezone, schedule)"
        )
    for key in data:
        if key not in _CONFIG_KEYS:
            raise InvalidBusinessHours(
                str(key), data[key], f"is not expected (known keys: {', '.join(_CONFIG_KEYS)})"
            )
    timezone = data.get("timezone", "UTC")
    if not isinstance(timezone, str):
        raise InvalidBusinessHours("timezone", timezone, "is not a time zone name")
    blackout = data.get("blackout_dates", ())
    if not isinstance(blackout, (list, tuple)):
        raise InvalidBusinessHours("blackout_dates", blackout, "is not a list of dates")
    holidays = data.get("holidays")
    if holidays is not None:
        with _at("holidays"):
            holidays = _converter.structure(holidays, HolidayCalendar)
    return BusinessHours(
        timezone=timezone,
        schedule=_structure_schedule(data.get("schedule", {})),
        blackout_dates=blackout,
        holidays=holidays,
        enabled=data.get("enabled", True),
    )


def _unstructure_business_hours(hours: BusinessHours) -> dict[str, Any]:
    out: dict[str, Any] = {
        "enabled": hours.enabled,
        "timezone": hours.timezone,
        "schedule": {
            day.name.lower(): [_unstructure_slot(s) for s in hours.schedule[day]] for day in Weekday
        },
    }
    if hours.blackout_dates:
        out["blackout_dates"] = [d.isoformat() for d in sorted(hours.blackout_dates)]
    if hours.holidays is not None:
        out["holidays"] = _unstructure_holidays(hours.holidays)
    return out


_converter.register_structure_hook(TimeSlot, _structure_slot)
_converter.register_structure_hook(HolidayCalendar, _structure_holidays)
_converter.register_structure_hook(BusinessHours, _structure_business_hours)
_converter.register_unstructure_hook(TimeSlot, _unstructure_slot)
_converter.register_unstructure_hook(HolidayCalendar, _unstructure_holidays)
_converter.register_unstructure_hook(BusinessHours, _unstructure_business_hours)

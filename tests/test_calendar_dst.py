"""Daylight-saving, odd offsets and local dates: the cases of compliance-and-time.md."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from outdial.calendar import BusinessHours, HolidayCalendar

UTC = timezone.utc
NEW_YORK = "America/New_York"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def local(
    zone: str, year: int, month: int, day: int, hour: int = 0, minute: int = 0, *, fold: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(zone), fold=fold)


def open_time(hours: BusinessHours, start: datetime, end: datetime) -> timedelta:
    return sum(
        (close - opening for opening, close in hours.open_intervals(start, end)), timedelta()
    )


def local_day(zone: str, day: date) -> tuple[datetime, datetime]:
    """The instants (in UTC) where local ``day`` starts and the next one starts.

    Converted to UTC because subtracting two datetimes of the same zone compares
    wall clocks and would make every day 24 h long.
    """
    following = day + timedelta(days=1)
    return (
        datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(zone)).astimezone(UTC),
        datetime(following.year, following.month, following.day, tzinfo=ZoneInfo(zone)).astimezone(
            UTC
        ),
    )


# -- New York ---------------------------------------------------------------------


def test_nonexistent_wall_time_maps_forward_in_zoneinfo() -> None:
    # The fact the calendar must not trip over: 02:30 does not exist on 2026-03-08.
    assert local(NEW_YORK, 2026, 3, 8, 2, 30).astimezone(UTC) == utc(2026, 3, 8, 7, 30)


def test_window_opening_in_spring_forward_gap_opens_when_the_clock_jumps() -> None:
    hours = BusinessHours.weekly(NEW_YORK, {"sunday": [("02:30", "05:00")]})

    opening = hours.next_open(utc(2026, 3, 8, 5, 0))

    assert opening == utc(2026, 3, 8, 7, 0)  # 03:00 EDT, the first wall time >= 02:30
    assert opening is not None
    assert opening.astimezone(ZoneInfo(NEW_YORK)).hour == 3
    assert not hours.is_open(utc(2026, 3, 8, 6, 59))
    assert hours.next_close(opening) == utc(2026, 3, 8, 9, 0)  # 05:00 EDT


@pytest.mark.parametrize(
    ("day", "length"),
    [
        (date(2026, 3, 8), timedelta(hours=23)),
        (date(2026, 11, 1), timedelta(hours=25)),
        (date(2026, 3, 9), timedelta(hours=24)),
    ],
)
def test_whole_day_slot_lasts_as_long_as_the_local_day(day: date, length: timedelta) -> None:
    hours = BusinessHours.weekly(NEW_YORK, {"daily": [("00:00", "24:00")]}, blackout_dates=[])
    start, end = local_day(NEW_YORK, day)
    # the calendar never closes, so look at the local day through a one-day schedule
    one_day = BusinessHours.weekly(NEW_YORK, {day.weekday(): [("00:00", "24:00")]})

    assert list(one_day.open_intervals(start - timedelta(days=1), end + timedelta(days=1))) == [
        (start, end)
    ]
    assert end - start == length
    assert open_time(hours, start, end) == length


def test_one_to_four_window_lasts_four_hours_on_fall_back_day() -> None:
    hours = BusinessHours.weekly(NEW_YORK, {"sunday": [("01:00", "04:00")]})
    start, end = local_day(NEW_YORK, date(2026, 11, 1))

    assert list(hours.open_intervals(start, end)) == [(utc(2026, 11, 1, 5), utc(2026, 11, 1, 9))]


def test_one_to_four_window_lasts_two_hours_on_spring_forward_day() -> None:
    hours = BusinessHours.weekly(NEW_YORK, {"sunday": [("01:00", "04:00")]})
    start, end = local_day(NEW_YORK, date(2026, 3, 8))

    assert list(hours.open_intervals(start, end)) == [(utc(2026, 3, 8, 6), utc(2026, 3, 8, 8))]


def test_overnight_window_across_spring_forward_lasts_seven_hours() -> None:
    hours = BusinessHours.weekly(NEW_YORK, {"saturday": [("22:00", "06:00")]})

    intervals = list(hours.open_intervals(utc(2026, 3, 7), utc(2026, 3, 10)))

    assert intervals == [(utc(2026, 3, 8, 3), utc(2026, 3, 8, 10))]
    assert intervals[0][1] - intervals[0][0] == timedelta(hours=7)


def test_repeated_hour_is_open_twice_when_inside_a_slot() -> None:
    hours = BusinessHours.weekly(NEW_YORK, {"sunday": [("01:30", "01:45")]})
    start, end = local_day(NEW_YORK, date(2026, 11, 1))

    assert list(hours.open_intervals(start, end)) == [
        (utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 5, 45)),  # 01:30 EDT
        (utc(2026, 11, 1, 6, 30), utc(2026, 11, 1, 6, 45)),  # 01:30 EST
    ]
    assert hours.next_open(utc(2026, 11, 1, 5, 50)) == utc(2026, 11, 1, 6, 30)


def test_fold_instants_are_compared_in_utc() -> None:
    first = local(NEW_YORK, 2026, 11, 1, 1, 20, fold=0)
    second = local(NEW_YORK, 2026, 11, 1, 1, 20, fold=1)
    hours = BusinessHours.weekly(NEW_YORK, {"sunday": [("01:15", "01:45")]})

    assert first == second  # same zone: Python compares wall times and ignores fold...
    assert first.astimezone(UTC) != second.astimezone(UTC)  # ...yet they are an hour apart
    assert hours.next_close(first) == utc(2026, 11, 1, 5, 45)
    assert hours.next_close(second) == utc(2026, 11, 1, 6, 45)
    assert hours.next_open(second) == utc(2026, 11, 1, 6, 20)
    assert hours.next_open(local(NEW_YORK, 2026, 11, 1, 1, 50, fold=0)) == utc(2026, 11, 1, 6, 15)


# -- London, Sydney, Lord Howe ------------------------------------------------------------


def test_london_spring_forward_gap_and_fall_back_repeat() -> None:
    hours = BusinessHours.weekly("Europe/London", {"sunday": [("01:30", "01:45")]})
    spring_start, spring_end = local_day("Europe/London", date(2026, 3, 29))
    fall_start, fall_end = local_day("Europe/London", date(2026, 10, 25))

    assert list(hours.open_intervals(spring_start, spring_end)) == []  # 01:30 never happens
    assert list(hours.open_intervals(fall_start, fall_end)) == [
        (utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 0, 45)),  # 01:30 BST
        (utc(2026, 10, 25, 1, 30), utc(2026, 10, 25, 1, 45)),  # 01:30 GMT
    ]


def test_london_window_opening_in_the_gap_opens_at_two() -> None:
    hours = BusinessHours.weekly("Europe/London", {"sunday": [("01:30", "03:00")]})

    assert hours.next_open(utc(2026, 3, 29)) == utc(2026, 3, 29, 1)  # 02:00 BST
    assert hours.next_close(utc(2026, 3, 29)) == utc(2026, 3, 29, 2)  # 03:00 BST


def test_sydney_gap_in_october_and_repeat_in_april() -> None:
    hours = BusinessHours.weekly("Australia/Sydney", {"sunday": [("02:30", "02:45")]})
    gap_start, gap_end = local_day("Australia/Sydney", date(2026, 10, 4))
    fold_start, fold_end = local_day("Australia/Sydney", date(2026, 4, 5))

    assert list(hours.open_intervals(gap_start, gap_end)) == []
    assert list(hours.open_intervals(fold_start, fold_end)) == [
        (utc(2026, 4, 4, 15, 30), utc(2026, 4, 4, 15, 45)),  # 02:30 AEDT (+11)
        (utc(2026, 4, 4, 16, 30), utc(2026, 4, 4, 16, 45)),  # 02:30 AEST (+10)
    ]


def test_sydney_window_opening_in_the_gap_opens_at_three() -> None:
    hours = BusinessHours.weekly("Australia/Sydney", {"sunday": [("02:30", "04:00")]})

    assert hours.next_open(utc(2026, 10, 3, 12)) == utc(2026, 10, 3, 16)  # 03:00 AEDT


def test_lord_howe_shifts_by_thirty_minutes() -> None:
    zone = "Australia/Lord_Howe"
    hours = BusinessHours.weekly(zone, {"sunday": [("02:00", "03:00")]})
    gap_start, gap_end = local_day(zone, date(2026, 10, 4))
    # 02:00-02:30 does not exist: the window opens at 02:30 (+11) and lasts 30 minutes
    assert list(hours.open_intervals(gap_start, gap_end)) == [
        (utc(2026, 10, 3, 15, 30), utc(2026, 10, 3, 16, 0))
    ]
    assert gap_end - gap_start == timedelta(hours=23, minutes=30)

    repeat = BusinessHours.weekly(zone, {"sunday": [("01:30", "02:00")]})
    fold_start, fold_end = local_day(zone, date(2026, 4, 5))
    # 01:30-02:00 happens twice, back to back: one interval of an hour
    assert list(repeat.open_intervals(fold_start, fold_end)) == [
        (utc(2026, 4, 4, 14, 30), utc(2026, 4, 4, 15, 30))
    ]
    assert fold_end - fold_start == timedelta(hours=24, minutes=30)


# -- days that start at 01:00 -------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "day", "first_instant"),
    [
        ("America/Santiago", date(2026, 9, 6), utc(2026, 9, 6, 4)),  # 01:00 -03
        ("America/Havana", date(2026, 3, 8), utc(2026, 3, 8, 5)),  # 01:00 CDT (-04)
    ],
)
def test_window_opening_at_midnight_opens_at_one_when_the_day_starts_at_one(
    zone: str, day: date, first_instant: datetime
) -> None:
    hours = BusinessHours.weekly(zone, {day.weekday(): [("00:00", "02:00")]})
    previous_evening = datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(zone)) - timedelta(
        hours=2
    )

    opening = hours.next_open(previous_evening)

    assert opening == first_instant
    assert opening is not None
    assert opening.astimezone(ZoneInfo(zone)).hour == 1
    assert hours.next_close(opening) == first_instant + timedelta(hours=1)
    # 00:30 does not exist: zoneinfo maps it past the jump, into the open window
    assert hours.is_open(local(zone, day.year, day.month, day.day, 0, 30))


# -- no DST ---------------------------------------------------------------------------------


def test_phoenix_keeps_the_same_utc_hours_all_year() -> None:
    hours = BusinessHours.weekly("America/Phoenix", {"daily": [("09:00", "17:00")]})

    for day in (date(2026, 1, 15), date(2026, 3, 8), date(2026, 7, 15), date(2026, 11, 1)):
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        assert list(hours.open_intervals(midnight, midnight + timedelta(days=1))) == [
            (midnight + timedelta(hours=16), midnight + timedelta(hours=24))
        ]


# -- local dates ----------------------------------------------------------------------------


def test_holiday_is_decided_on_the_calendar_local_date() -> None:
    hours = BusinessHours.weekly(
        "America/Los_Angeles", {"daily": [("00:00", "24:00")]}, holidays=HolidayCalendar("US")
    )

    assert hours.is_open(utc(2026, 12, 25, 3))  # 19:00 on 24 December in Los Angeles
    assert not hours.is_open(utc(2026, 12, 25, 8))  # 00:00 on Christmas Day there
    assert hours.next_close(utc(2026, 12, 25, 3)) == utc(2026, 12, 25, 8)
    assert hours.next_open(utc(2026, 12, 25, 9)) == utc(2026, 12, 26, 8)


def test_blackout_date_is_decided_on_the_calendar_local_date() -> None:
    hours = BusinessHours.weekly(
        "America/Los_Angeles", {"daily": [("00:00", "24:00")]}, blackout_dates=["2026-12-25"]
    )

    assert hours.is_open(utc(2026, 12, 25, 3))
    assert not hours.is_open(utc(2026, 12, 25, 8))
    assert list(hours.open_intervals(utc(2026, 12, 24, 8), utc(2026, 12, 27, 8))) == [
        (utc(2026, 12, 24, 8), utc(2026, 12, 25, 8)),
        (utc(2026, 12, 26, 8), utc(2026, 12, 27, 8)),
    ]


# -- overnight windows ----------------------------------------------------------------------


def test_tuesday_three_am_inside_monday_night_shift_is_open_now() -> None:
    hours = BusinessHours.weekly(NEW_YORK, {"monday": [("22:00", "06:00")]})
    tuesday_3am = local(NEW_YORK, 2026, 6, 16, 3, 0)  # a Tuesday

    assert tuesday_3am.weekday() == 1
    assert hours.is_open(tuesday_3am)
    assert hours.next_open(tuesday_3am) == tuesday_3am
    assert hours.next_close(tuesday_3am) == local(NEW_YORK, 2026, 6, 16, 6, 0)
    assert not hours.is_open(local(NEW_YORK, 2026, 6, 16, 22, 0))  # no shift on Tuesday night


def test_blackout_closes_the_after_midnight_part_of_an_overnight_slot() -> None:
    hours = BusinessHours.weekly(
        NEW_YORK, {"monday": [("22:00", "06:00")]}, blackout_dates=["2026-06-16"]
    )

    assert hours.is_open(local(NEW_YORK, 2026, 6, 15, 23, 0))
    assert not hours.is_open(local(NEW_YORK, 2026, 6, 16, 3, 0))
    assert hours.next_close(local(NEW_YORK, 2026, 6, 15, 23, 0)) == local(
        NEW_YORK, 2026, 6, 16, 0, 0
    )

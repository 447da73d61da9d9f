"""Business hours: parsing, configuration, searches, holidays and intersections."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import attrs
import pytest

from outdial.calendar import (
    ALWAYS_OPEN,
    SEARCH_HORIZON,
    BusinessHours,
    Calendar,
    CalendarIntersection,
    HolidayCalendar,
    TimeSlot,
    Weekday,
)
from outdial.errors import (
    ConfigurationError,
    InvalidBusinessHours,
    MissingExtra,
    NaiveDatetimeError,
    UnknownTimeZone,
)

UTC = timezone.utc
NEW_YORK = ZoneInfo("America/New_York")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def ny(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=NEW_YORK)


NINE_TO_FIVE = BusinessHours.weekly("America/New_York", {"mon-fri": [("09:00", "17:00")]})

SEED_CONFIG: dict[str, Any] = {
    "enabled": True,
    "timezone": "America/New_York",
    "schedule": {
        "monday": [{"start": "09:00", "end": "12:00"}, {"start": "13:00", "end": "17:00"}],
        "tuesday": [{"start": "09:00", "end": "17:00"}],
        "wednesday": [{"start": "09:00", "end": "17:00"}],
        "thursday": [{"start": "09:00", "end": "17:00"}],
        "friday": [{"start": "22:00", "end": "02:00"}],
        "saturday": [],
        "sunday": [],
    },
}


# -- Weekday and TimeSlot -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "day"),
    [
        ("monday", Weekday.MONDAY),
        ("Mon", Weekday.MONDAY),
        ("TUESDAY", Weekday.TUESDAY),
        ("thurs", Weekday.THURSDAY),
        (" sun ", Weekday.SUNDAY),
        (0, Weekday.MONDAY),
        (6, Weekday.SUNDAY),
        (Weekday.FRIDAY, Weekday.FRIDAY),
    ],
)
def test_weekday_parses_names_abbreviations_and_numbers(text: str | int, day: Weekday) -> None:
    assert Weekday.parse(text) is day


@pytest.mark.parametrize("text", ["funday", "t", "mo", 7, -1, True, ""])
def test_weekday_refuses_what_is_not_a_day(text: str | int) -> None:
    with pytest.raises(InvalidBusinessHours, match="is not a day of the week") as caught:
        Weekday.parse(text, "days[2]")
    assert caught.value.field == "days[2]"


def test_weekday_numbers_match_date_weekday() -> None:
    assert Weekday(date(2026, 6, 15).weekday()) is Weekday.MONDAY


def test_time_slot_parses_hh_mm_and_24_00_as_midnight_end() -> None:
    assert TimeSlot.parse("09:00", "17:30") == TimeSlot(time(9), time(17, 30))
    assert TimeSlot.parse("22:00", "24:00") == TimeSlot(time(22), time(0))
    assert TimeSlot.parse("00:00", "24:00") == TimeSlot(time(0), time(0))
    assert TimeSlot.parse("9:05", "17:00:00") == TimeSlot(time(9, 5), time(17))
    assert str(TimeSlot.parse("22:00", "24:00")) == "22:00-24:00"


def test_time_slot_crossing_midnight() -> None:
    assert TimeSlot.parse("22:00", "06:00").crosses_midnight
    assert not TimeSlot.parse("22:00", "24:00").crosses_midnight
    assert not TimeSlot.parse("09:00", "17:00").crosses_midnight


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("25:00", "17:00", "slot.start: '25:00' is not HH:MM"),
        ("09:60", "17:00", "slot.start: '09:60' is not HH:MM"),
        ("9am", "17:00", "slot.start: '9am' is not HH:MM"),
        ("09:00", "24:01", "slot.end: '24:01' is not HH:MM"),
        ("24:00", "06:00", "slot.start: '24:00' is not a start time (24:00 can only end a slot)"),
        ("09:00", "09:00", "slot: '09:00-09:00' is empty: start equals end"),
        ("00:00", "00:00", "slot: '00:00-00:00' is empty: start equals end"),
    ],
)
def test_time_slot_parse_errors_name_the_field(start: str, end: str, message: str) -> None:
    with pytest.raises(InvalidBusinessHours) as caught:
        TimeSlot.parse(start, end, field="slot")
    assert str(caught.value) == message


def test_time_slot_refuses_seconds_zones_and_empty_slots() -> None:
    with pytest.raises(InvalidBusinessHours, match=r"start: .* is not a whole minute"):
        TimeSlot(time(9, 0, 30), time(17))
    with pytest.raises(InvalidBusinessHours, match=r"end: .* drop its tzinfo"):
        TimeSlot(time(9), time(17, tzinfo=UTC))
    with pytest.raises(InvalidBusinessHours, match="is empty"):
        TimeSlot(time(9), time(9))


# -- construction -------------------------------------------------------------------------


def test_weekly_expands_day_ranges_and_groups() -> None:
    slot = [("09:00", "17:00")]
    by_range = BusinessHours.weekly("UTC", {"mon-fri": slot})
    by_group = BusinessHours.weekly("UTC", {"weekdays": slot})
    by_list = BusinessHours.weekly("UTC", {"mon,tue,wed,thu,fri": slot})
    by_day = BusinessHours.weekly("UTC", dict.fromkeys(list(Weekday)[:5], slot))

    assert by_range == by_group == by_list == by_day
    assert by_range.schedule[Weekday.SATURDAY] == ()
    assert by_range.schedule[Weekday.FRIDAY] == (TimeSlot(time(9), time(17)),)


def test_weekly_wrapping_range_and_weekend() -> None:
    hours = BusinessHours.weekly("UTC", {"fri-mon": [("10:00", "12:00")]})
    weekend = BusinessHours.weekly("UTC", {"weekend": [("10:00", "12:00")]})

    assert [d for d, slots in hours.schedule.items() if slots] == [
        Weekday.MONDAY,
        Weekday.FRIDAY,
        Weekday.SATURDAY,
        Weekday.SUNDAY,
    ]
    assert [d for d, slots in weekend.schedule.items() if slots] == [
        Weekday.SATURDAY,
        Weekday.SUNDAY,
    ]


def test_weekly_gives_a_day_named_twice_all_its_slots() -> None:
    hours = BusinessHours.weekly(
        "UTC", {"weekdays": [("09:00", "12:00")], "fri": [("13:00", "15:00")]}
    )

    assert [str(s) for s in hours.schedule[Weekday.FRIDAY]] == ["09:00-12:00", "13:00-15:00"]
    assert [str(s) for s in hours.schedule[Weekday.THURSDAY]] == ["09:00-12:00"]


def test_weekly_errors_name_the_key_and_slot() -> None:
    with pytest.raises(InvalidBusinessHours) as caught:
        BusinessHours.weekly("UTC", {"mon-fri": [("09:00", "17:00"), ("13:00", "25:00")]})
    assert str(caught.value) == "schedule.mon-fri[1].end: '25:00' is not HH:MM"

    with pytest.raises(InvalidBusinessHours) as caught:
        BusinessHours.weekly("UTC", {"mon-funday": [("09:00", "17:00")]})
    assert caught.value.field == "schedule.mon-funday"


def test_unknown_time_zone_is_refused() -> None:
    with pytest.raises(UnknownTimeZone) as caught:
        BusinessHours.weekly("Mars/Olympus_Mons", {"mon": [("09:00", "17:00")]})
    assert caught.value.field == "timezone"
    assert str(caught.value) == "timezone: 'Mars/Olympus_Mons' is not a known IANA time zone"
    assert isinstance(caught.value, ConfigurationError)
    with pytest.raises(UnknownTimeZone):
        BusinessHours(timezone="Etc/Unknown")


def test_schedule_is_an_immutable_mapping_of_all_seven_days() -> None:
    schedule = NINE_TO_FIVE.schedule

    assert list(schedule) == list(Weekday)
    with pytest.raises(TypeError):
        schedule[Weekday.SATURDAY] = ()  # type: ignore[index]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        NINE_TO_FIVE.timezone = "UTC"  # type: ignore[misc]


def test_equal_configurations_are_equal_and_hash_alike() -> None:
    same = BusinessHours(
        timezone="America/New_York",
        schedule={d: [("09:00", "17:00")] for d in ("monday", "tue", 2, "thursday", "FRI")},
    )

    assert same == NINE_TO_FIVE
    assert hash(same) == hash(NINE_TO_FIVE)
    assert len({same, NINE_TO_FIVE}) == 1
    assert same != attrs.evolve(same, blackout_dates=["2026-12-25"])


def test_zone_property_and_calendar_protocol() -> None:
    assert NINE_TO_FIVE.zone == NEW_YORK
    assert isinstance(NINE_TO_FIVE, Calendar)
    assert isinstance(NINE_TO_FIVE.intersect(ALWAYS_OPEN), Calendar)


# -- configuration round trip and errors ---------------------------------------------------------


def test_seed_config_round_trips_exactly() -> None:
    hours = BusinessHours.from_dict(SEED_CONFIG)

    assert hours.to_dict() == SEED_CONFIG
    assert BusinessHours.from_dict(hours.to_dict()) == hours
    assert hours.is_open(ny(2026, 6, 20, 1, 30))  # Friday's 22:00-02:00 reaches Saturday


def test_to_dict_writes_all_seven_days_and_extras_only_when_set() -> None:
    hours = BusinessHours.from_dict(
        {
            "timezone": "Europe/Paris",
            "schedule": {"wednesday": [{"start": "22:00", "end": "24:00"}]},
        }
    )

    data = hours.to_dict()
    assert list(data["schedule"]) == [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ]
    assert data["schedule"]["wednesday"] == [{"start": "22:00", "end": "24:00"}]
    assert "blackout_dates" not in data
    assert "holidays" not in data
    assert data["enabled"] is True


def test_blackout_dates_and_holidays_round_trip() -> None:
    config = {
        **SEED_CONFIG,
        "blackout_dates": ["2026-12-24", "2026-07-03"],
        "holidays": {"country": "US", "subdivision": "CA"},
    }

    hours = BusinessHours.from_dict(config)

    assert hours.blackout_dates == {date(2026, 12, 24), date(2026, 7, 3)}
    assert hours.holidays == HolidayCalendar("US", "CA")
    assert hours.to_dict() == {**config, "blackout_dates": ["2026-07-03", "2026-12-24"]}
    assert BusinessHours.from_dict(hours.to_dict()) == hours


def test_missing_keys_and_days_take_defaults() -> None:
    hours = BusinessHours.from_dict({"schedule": {"monday": [{"start": "09:00", "end": "10:00"}]}})

    assert hours.enabled
    assert hours.timezone == "UTC"
    assert hours.schedule[Weekday.TUESDAY] == ()
    assert BusinessHours.from_dict({"enabled": False}).to_dict()["schedule"]["sunday"] == []


@pytest.mark.parametrize(
    ("config", "error", "field", "message"),
    [
        (
            {"schedule": {"monday": [{"start": "25:00", "end": "17:00"}]}},
            InvalidBusinessHours,
            "schedule.monday[0].start",
            "schedule.monday[0].start: '25:00' is not HH:MM",
        ),
        (
            {
                "schedule": {
                    "friday": [{"start": "09:00", "end": "17:00"}, {"start": "9", "end": "x"}]
                }
            },
            InvalidBusinessHours,
            "schedule.friday[1].start",
            "schedule.friday[1].start: '9' is not HH:MM",
        ),
        (
            {"schedule": {"monday": [{"start": "09:00", "end": None}]}},
            InvalidBusinessHours,
            "schedule.monday[0].end",
            "schedule.monday[0].end: None is not HH:MM",
        ),
        (
            {"schedule": {"monday": [{"start": "09:00", "end": "09:00"}]}},
            InvalidBusinessHours,
            "schedule.monday[0]",
            "schedule.monday[0]: '09:00-09:00' is empty: start equals end",
        ),
        (
            {"schedule": {"funday": []}},
            InvalidBusinessHours,
            "schedule.funday",
            "schedule.funday: 'funday' is not a day of the week",
        ),
        (
            {"schedule": {"mon-fri": []}},
            InvalidBusinessHours,
            "schedule.mon-fri",
            "schedule.mon-fri: 'mon-fri' is not a day of the week",
        ),
        (
            {"schedule": {"monday": [], "Mon": []}},
            InvalidBusinessHours,
            "schedule.Mon",
            "schedule.Mon: 'Mon' repeats monday",
        ),
        (
            {"schedule": {"monday": "09:00-17:00"}},
            InvalidBusinessHours,
            "schedule.monday",
            "schedule.monday: '09:00-17:00' is not a list of slots",
        ),
        (
            {"schedule": {"monday": [["09:00", "17:00"]]}},
            InvalidBusinessHours,
            "schedule.monday[0]",
            "schedule.monday[0]: ['09:00', '17:00'] is not a slot object "
            '{"start": "HH:MM", "end": "HH:MM"}',
        ),
        (
            {"schedule": {"monday": [{"start": "09:00"}]}},
            InvalidBusinessHours,
            "schedule.monday[0]",
            "schedule.monday[0]: {'start': '09:00'} has no 'end'",
        ),
        (
            {"schedule": {"monday": [{"start": "09:00", "end": "10:00", "label": "am"}]}},
            InvalidBusinessHours,
            "schedule.monday[0].label",
            "schedule.monday[0].label: 'am' is not expected (known keys: start, end)",
        ),
        (
            {"schedule": [{"start": "09:00", "end": "10:00"}]},
            InvalidBusinessHours,
            "schedule",
            "schedule: [{'start': '09:00', 'end': '10:00'}] is not a mapping of day names to slots",
        ),
        (
            {"timezone": "Mars/Olympus_Mons"},
            UnknownTimeZone,
            "timezone",
            "timezone: 'Mars/Olympus_Mons' is not a known IANA time zone",
        ),
        ({"timezone": 5}, InvalidBusinessHours, "timezone", "timezone: 5 is not a time zone name"),
        (
            {"enabled": "yes"},
            InvalidBusinessHours,
            "enabled",
            "enabled: 'yes' is not true or false",
        ),
        (
            {"blackout_dates": ["2026-12-25", "2026-02-30"]},
            InvalidBusinessHours,
            "blackout_dates[1]",
            "blackout_dates[1]: '2026-02-30' is not a date (YYYY-MM-DD)",
        ),
        (
            {"blackout_dates": "2026-12-25"},
            InvalidBusinessHours,
            "blackout_dates",
            "blackout_dates: '2026-12-25' is not a list of dates",
        ),
        (
            {"holidays": {"country": "XX"}},
            InvalidBusinessHours,
            "holidays.country",
            "holidays.country: 'XX' is not a country the holidays package knows",
        ),
        (
            {"holidays": {"country": "US", "subdivision": "ZZ"}},
            InvalidBusinessHours,
            "holidays.subdivision",
            "holidays.subdivision: 'ZZ' is not a subdivision of US the holidays package knows",
        ),
        (
            {"holidays": {"subdivision": "CA"}},
            InvalidBusinessHours,
            "holidays",
            "holidays: {'subdivision': 'CA'} has no 'country'",
        ),
        (
            {"holidays": ["US"]},
            InvalidBusinessHours,
            "holidays",
            'holidays: [\'US\'] is not {"country": ..., "subdivision": ...}',
        ),
        (
            {"blackout_date": []},
            InvalidBusinessHours,
            "blackout_date",
            "blackout_date: [] is not expected "
            "(known keys: enabled, timezone, schedule, blackout_dates, holidays)",
        ),
        (
            ["monday"],
            InvalidBusinessHours,
            "",
            "['monday'] is not a business-hours object (enabled, timezone, schedule)",
        ),
    ],
)
def test_invalid_config_is_refused_with_field_path_and_value(
    config: Any, error: type[ConfigurationError], field: str, message: str
) -> None:
    with pytest.raises(error) as caught:
        BusinessHours.from_dict(config)

    assert type(caught.value) is error
    assert caught.value.field == field
    assert str(caught.value) == message
    assert isinstance(caught.value, ValueError)


# -- naive datetimes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "calendar",
    [NINE_TO_FIVE, ALWAYS_OPEN, NINE_TO_FIVE.intersect(ALWAYS_OPEN)],
    ids=["business-hours", "always-open", "intersection"],
)
def test_every_method_refuses_a_naive_datetime(calendar: Calendar) -> None:
    naive = datetime(2026, 6, 15, 10, 0)
    for method in (calendar.is_open, calendar.next_open, calendar.next_close):
        with pytest.raises(NaiveDatetimeError):
            method(naive)
    with pytest.raises(NaiveDatetimeError):
        calendar.open_intervals(naive, utc(2026, 6, 16))  # refused at once, not when iterated
    with pytest.raises(NaiveDatetimeError):
        calendar.open_intervals(utc(2026, 6, 15), naive)


# -- searches ----------------------------------------------------------------------------------


def test_next_open_is_the_instant_itself_when_open_and_always_utc() -> None:
    inside = ny(2026, 6, 15, 10, 0)

    opening = NINE_TO_FIVE.next_open(inside)

    assert opening == inside
    assert opening is not None
    assert opening.tzinfo is UTC


def test_next_open_from_friday_evening_is_monday_morning() -> None:
    assert NINE_TO_FIVE.next_open(ny(2026, 6, 19, 17, 0)) == ny(2026, 6, 22, 9, 0)
    assert NINE_TO_FIVE.next_open(ny(2026, 6, 22, 8, 59)) == ny(2026, 6, 22, 9, 0)


def test_intervals_are_half_open() -> None:
    assert NINE_TO_FIVE.is_open(ny(2026, 6, 15, 9, 0))
    assert not NINE_TO_FIVE.is_open(ny(2026, 6, 15, 17, 0))
    assert NINE_TO_FIVE.is_open(ny(2026, 6, 15, 16, 59, 59, 999999))
    assert not NINE_TO_FIVE.is_open(ny(2026, 6, 15, 8, 59, 59, 999999))


def test_next_open_jumps_a_three_week_blackout() -> None:
    blackout = [date(2026, 12, 7) + timedelta(days=k) for k in range(21)]
    hours = attrs.evolve(NINE_TO_FIVE, blackout_dates=blackout)

    assert hours.next_open(ny(2026, 12, 4, 17, 0)) == ny(2026, 12, 28, 9, 0)
    assert hours.next_close(ny(2026, 12, 4, 17, 0)) == ny(2026, 12, 28, 17, 0)


def test_blackouts_skip_only_the_days_they_name() -> None:
    hours = attrs.evolve(
        NINE_TO_FIVE, blackout_dates=[date(2026, 6, 15), date(2026, 6, 17), date(2026, 6, 18)]
    )

    days = [o.date() for o, _ in hours.open_intervals(ny(2026, 6, 15), ny(2026, 6, 27))]

    assert days == [date(2026, 6, d) for d in (16, 19, 22, 23, 24, 25, 26)]


def test_calendar_closed_beyond_the_horizon_never_opens() -> None:
    mondays = [date(2026, 1, 5) + timedelta(weeks=k) for k in range(300)]
    closed_for_years = BusinessHours.weekly(
        "UTC", {"monday": [("09:00", "10:00")]}, blackout_dates=mondays
    )
    closed_for_a_while = attrs.evolve(closed_for_years, blackout_dates=mondays[:200])

    assert mondays[-1] - mondays[0] > SEARCH_HORIZON
    assert closed_for_years.next_open(utc(2026, 1, 1)) is None
    assert closed_for_years.next_close(utc(2026, 1, 1)) is None
    assert closed_for_a_while.next_open(utc(2026, 1, 1)) == utc(2029, 11, 5, 9)


def test_empty_schedule_never_opens() -> None:
    hours = BusinessHours(timezone="America/New_York")

    assert hours.is_empty
    assert not hours.is_open(utc(2026, 1, 1))
    assert hours.next_open(utc(2026, 1, 1)) is None
    assert hours.next_close(utc(2026, 1, 1)) is None
    assert list(hours.open_intervals(utc(2026, 1, 1), utc(2026, 2, 1))) == []


def test_next_close_inside_and_before_an_interval() -> None:
    assert NINE_TO_FIVE.next_close(ny(2026, 6, 15, 10, 0)) == ny(2026, 6, 15, 17, 0)
    assert NINE_TO_FIVE.next_close(ny(2026, 6, 15, 17, 0)) == ny(2026, 6, 16, 17, 0)
    assert NINE_TO_FIVE.next_close(ny(2026, 6, 20, 12, 0)) == ny(2026, 6, 22, 17, 0)


def test_adjacent_slots_across_midnight_are_one_interval() -> None:
    hours = BusinessHours.weekly(
        "America/New_York", {"monday": [("22:00", "24:00")], "tuesday": [("00:00", "06:00")]}
    )

    assert hours.next_close(ny(2026, 6, 15, 23, 0)) == ny(2026, 6, 16, 6, 0)
    assert list(hours.open_intervals(ny(2026, 6, 15), ny(2026, 6, 17))) == [
        (ny(2026, 6, 15, 22, 0), ny(2026, 6, 16, 6, 0))
    ]


def test_overlapping_slots_merge() -> None:
    hours = BusinessHours.weekly("UTC", {"monday": [("09:00", "12:00"), ("11:00", "14:00")]})

    assert list(hours.open_intervals(utc(2026, 6, 15), utc(2026, 6, 16))) == [
        (utc(2026, 6, 15, 9), utc(2026, 6, 15, 14))
    ]


def test_open_intervals_are_clipped_to_the_window() -> None:
    intervals = list(NINE_TO_FIVE.open_intervals(ny(2026, 6, 15, 12, 0), ny(2026, 6, 17, 10, 0)))

    assert intervals == [
        (ny(2026, 6, 15, 12, 0), ny(2026, 6, 15, 17, 0)),
        (ny(2026, 6, 16, 9, 0), ny(2026, 6, 16, 17, 0)),
        (ny(2026, 6, 17, 9, 0), ny(2026, 6, 17, 10, 0)),
    ]
    assert all(a.tzinfo is UTC and b.tzinfo is UTC for a, b in intervals)
    assert list(NINE_TO_FIVE.open_intervals(ny(2026, 6, 16), ny(2026, 6, 15))) == []


def test_round_the_clock_schedule_never_closes_but_a_holiday_closes_it() -> None:
    always = BusinessHours.weekly("America/New_York", {"daily": [("00:00", "24:00")]})
    with_holiday = attrs.evolve(always, blackout_dates=["2026-07-04"])

    assert always.next_close(utc(2026, 6, 1)) is None
    assert with_holiday.next_close(utc(2026, 6, 1)) == ny(2026, 7, 4, 0, 0)
    assert with_holiday.next_open(ny(2026, 7, 4, 12, 0)) == ny(2026, 7, 5, 0, 0)


# -- disabled and always open ----------------------------------------------------------------


def test_disabled_business_hours_are_always_open() -> None:
    disabled = attrs.evolve(NINE_TO_FIVE, enabled=False, blackout_dates=["2026-06-20"])
    saturday_night = ny(2026, 6, 20, 23, 0)

    assert disabled.is_open(saturday_night)
    assert disabled.next_open(saturday_night) == saturday_night
    assert disabled.next_close(saturday_night) is None
    assert not disabled.is_empty
    assert list(disabled.open_intervals(utc(2026, 6, 20), utc(2026, 6, 22))) == [
        (utc(2026, 6, 20), utc(2026, 6, 22))
    ]
    assert disabled.to_dict()["enabled"] is False


def test_always_open_constant_and_constructor() -> None:
    assert ALWAYS_OPEN.is_open(utc(2026, 1, 1, 3))
    assert ALWAYS_OPEN.next_close(utc(2026, 1, 1, 3)) is None
    assert BusinessHours.always_open("Asia/Tokyo").timezone == "Asia/Tokyo"
    assert not BusinessHours.always_open().enabled


# -- holidays ----------------------------------------------------------------------------------


def test_holiday_calendar_knows_us_public_holidays() -> None:
    us = HolidayCalendar("US")

    assert date(2026, 12, 25) in us
    assert date(2026, 7, 3) in us  # Independence Day observed (the 4th is a Saturday)
    assert date(2026, 12, 24) not in us
    assert date(2027, 1, 1) in us


def test_holiday_calendar_refuses_datetimes() -> None:
    with pytest.raises(TypeError, match="local date"):
        datetime(2026, 12, 25, 3, tzinfo=UTC) in HolidayCalendar("US")  # noqa: B015


def test_holiday_calendar_equality_ignores_its_cache() -> None:
    used, fresh = HolidayCalendar("us"), HolidayCalendar("US")
    assert date(2026, 1, 1) in used

    assert used == fresh
    assert hash(used) == hash(fresh)
    assert used.country == "US"


def test_holiday_calendar_validates_country_and_subdivision() -> None:
    with pytest.raises(InvalidBusinessHours, match="country: 'XX'"):
        HolidayCalendar("XX")
    with pytest.raises(InvalidBusinessHours, match="subdivision: 'ZZ'"):
        HolidayCalendar("US", "ZZ")
    with pytest.raises(InvalidBusinessHours, match="country: '' is not a country code"):
        HolidayCalendar("")


def test_holiday_calendar_without_the_package_raises_missing_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "holidays", None)  # makes `import holidays` fail
    calendar = HolidayCalendar("US")  # configuration still loads

    with pytest.raises(MissingExtra) as caught:
        date(2026, 12, 25) in calendar  # noqa: B015
    assert caught.value.extra == "holidays"
    assert "pip install 'outdial[holidays]'" in str(caught.value)


def test_business_hours_closed_on_public_holidays() -> None:
    hours = attrs.evolve(NINE_TO_FIVE, holidays="US")

    assert not hours.is_open(ny(2026, 12, 25, 10, 0))
    assert hours.next_open(ny(2026, 12, 24, 17, 0)) == ny(2026, 12, 28, 9, 0)
    assert hours.is_open(ny(2026, 12, 24, 10, 0))


# -- intersections ----------------------------------------------------------------------------

LOS_ANGELES_RULE = BusinessHours.weekly("America/Los_Angeles", {"daily": [("08:00", "21:00")]})


def test_intersection_of_new_york_campaign_and_los_angeles_rule() -> None:
    both = NINE_TO_FIVE.intersect(LOS_ANGELES_RULE)
    monday_early = ny(2026, 6, 15, 9, 0)  # 06:00 in Los Angeles

    assert isinstance(both, CalendarIntersection)
    assert not both.is_open(monday_early)
    assert both.next_open(monday_early) == ny(2026, 6, 15, 11, 0)  # 08:00 in Los Angeles
    assert both.next_close(monday_early) == ny(2026, 6, 15, 17, 0)
    assert list(both.open_intervals(ny(2026, 6, 15), ny(2026, 6, 17))) == [
        (ny(2026, 6, 15, 11, 0), ny(2026, 6, 15, 17, 0)),
        (ny(2026, 6, 16, 11, 0), ny(2026, 6, 16, 17, 0)),
    ]


def test_calendars_that_never_overlap_have_no_next_open() -> None:
    new_york = BusinessHours.weekly("America/New_York", {"daily": [("08:00", "09:00")]})
    tokyo = BusinessHours.weekly("Asia/Tokyo", {"daily": [("08:00", "09:00")]})
    never = new_york.intersect(tokyo)

    assert never.next_open(utc(2026, 1, 1)) is None
    assert never.next_close(utc(2026, 1, 1)) is None
    assert list(never.open_intervals(utc(2026, 1, 1), utc(2027, 1, 1))) == []


def test_intersection_finds_overlap_that_exists_only_between_dst_switches() -> None:
    # 08:00 New York meets 12:00 London only while the US is on summer time and the
    # UK is not: 8-29 March and 25 October-1 November 2026.
    new_york = BusinessHours.weekly("America/New_York", {"daily": [("08:00", "09:00")]})
    london = BusinessHours.weekly("Europe/London", {"daily": [("12:00", "13:00")]})
    both = new_york.intersect(london)

    assert both.next_open(utc(2026, 1, 1)) == utc(2026, 3, 8, 12)
    assert both.next_open(utc(2026, 3, 29, 13)) == utc(2026, 10, 25, 12)
    assert both.next_close(utc(2026, 10, 31, 12, 30)) == utc(2026, 10, 31, 13)
    assert both.next_open(utc(2026, 11, 1, 13)) == utc(2027, 3, 14, 12)


def test_intersections_flatten_and_accept_always_open() -> None:
    sunday_rule = BusinessHours.weekly("UTC", {"sun": [("00:00", "24:00")]})
    nested = NINE_TO_FIVE.intersect(LOS_ANGELES_RULE).intersect(ALWAYS_OPEN, sunday_rule)

    assert nested.parts == (NINE_TO_FIVE, LOS_ANGELES_RULE, ALWAYS_OPEN, sunday_rule)
    assert CalendarIntersection((NINE_TO_FIVE.intersect(ALWAYS_OPEN),)).parts == (
        NINE_TO_FIVE,
        ALWAYS_OPEN,
    )
    assert nested.next_open(utc(2026, 6, 15)) is None  # 9-5 Mon-Fri never meets UTC Sundays
    with_always = NINE_TO_FIVE.intersect(ALWAYS_OPEN)
    assert with_always.next_open(ny(2026, 6, 19, 18, 0)) == ny(2026, 6, 22, 9, 0)
    assert with_always.next_close(ny(2026, 6, 19, 18, 0)) == ny(2026, 6, 22, 17, 0)


def test_empty_intersection_is_always_open() -> None:
    nothing = CalendarIntersection(())

    assert nothing.is_open(utc(2026, 1, 1))
    assert nothing.next_open(utc(2026, 1, 1)) == utc(2026, 1, 1)
    assert nothing.next_close(utc(2026, 1, 1)) is None


def test_intersection_refuses_what_is_not_a_calendar() -> None:
    with pytest.raises(TypeError, match="is not a Calendar"):
        CalendarIntersection(("monday 9-5",))  # type: ignore[arg-type]


@attrs.frozen
class EvenUtcHours:
    """A Calendar written against the protocol only: open during even UTC hours."""

    def is_open(self, instant: datetime) -> bool:
        return instant.astimezone(UTC).hour % 2 == 0

    def next_open(self, instant: datetime) -> datetime | None:
        at = instant.astimezone(UTC)
        return (
            at
            if self.is_open(at)
            else at.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        )

    def next_close(self, instant: datetime) -> datetime | None:
        opening = self.next_open(instant)
        assert opening is not None
        return opening.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)

    def open_intervals(self, start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
        raise NotImplementedError

    def intersect(self, *others: Calendar) -> Calendar:
        return CalendarIntersection((self, *others))


def test_intersection_with_a_foreign_calendar_uses_only_the_protocol() -> None:
    both = NINE_TO_FIVE.intersect(EvenUtcHours())
    monday = ny(2026, 6, 15, 9, 0)  # 13:00 UTC, an odd hour

    assert isinstance(EvenUtcHours(), Calendar)
    assert both.next_open(monday) == utc(2026, 6, 15, 14)
    assert [(a.hour, b.hour) for a, b in both.open_intervals(monday, ny(2026, 6, 15, 17, 0))] == [
        (14, 15),
        (16, 17),
        (18, 19),
        (20, 21),
    ]

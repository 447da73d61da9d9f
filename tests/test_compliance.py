"""Calling rules as data: which rules govern a number, and when it may be called."""

from __future__ import annotations

import copy
import json
from datetime import datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outdial import compliance
from outdial.calendar import ALWAYS_OPEN, TimeSlot, Weekday
from outdial.compliance import (
    BUILTIN_RULE_SETS,
    CallingRule,
    RuleSet,
    get_rule_set,
    register_rule_set,
    rule_set_names,
)
from outdial.errors import ConfigurationError, InvalidPhoneNumber, NoPermittedWindow, NotFound
from outdial.phone import PhoneNumberInfo, time_zones_for_number
from outdial.retry import RollingCap

UTC = timezone.utc
NEW_YORK = ZoneInfo("America/New_York")
CHICAGO = ZoneInfo("America/Chicago")
PARIS = ZoneInfo("Europe/Paris")
KOLKATA = ZoneInfo("Asia/Kolkata")
BOISE = ZoneInfo("America/Boise")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")

MIAMI = "+13053725000"  # FL
MANHATTAN = "+12128675309"  # NY
TULSA = "+19185551234"  # OK
BALTIMORE = "+14105551234"  # MD
NEW_ORLEANS = "+15045861234"  # LA
PROVIDENCE = "+14015551234"  # RI
PARIS_NUMBER = "+33142685300"
MUMBAI = "+919876543210"
LONDON = "+442079460958"
IDAHO = "+12085550100"  # area-wide 208 numbers: America/Boise and America/Los_Angeles
TOLL_FREE = "+18005551234"

# 2026-03-11 is a Wednesday (after the US switch to DST, before Europe's).
WEDNESDAY = (2026, 3, 11)


def at(
    zone: ZoneInfo, hour: int, minute: int = 0, day: tuple[int, int, int] = WEDNESDAY
) -> datetime:
    return datetime(*day, hour, minute, tzinfo=zone)


# -- which rules apply ------------------------------------------------------------------------


def test_a_florida_number_gets_the_federal_and_florida_rules() -> None:
    names = [rule.name for rule in get_rule_set("us").rules_for(MIAMI)]
    assert names == ["US federal (TCPA)", "Florida"]


def test_a_new_york_number_gets_only_the_federal_rule() -> None:
    assert [r.name for r in get_rule_set("us").rules_for(MANHATTAN)] == ["US federal (TCPA)"]


def test_rules_of_other_countries_do_not_apply() -> None:
    assert get_rule_set("us").rules_for(MUMBAI) == ()
    assert get_rule_set("france").rules_for(MANHATTAN) == ()
    assert [r.name for r in get_rule_set("standard").rules_for(MUMBAI)] == ["India (TRAI)"]
    assert [r.country for r in get_rule_set("standard").rules_for(LONDON)] == ["GB"]


def test_a_canadian_number_is_not_governed_by_us_rules() -> None:
    assert get_rule_set("us").rules_for("+14162045000") == ()


def test_rules_for_refuses_text_that_is_not_a_number() -> None:
    with pytest.raises(InvalidPhoneNumber):
        get_rule_set("us").rules_for("(212) 867-5309")


# -- US -----------------------------------------------------------------------------------------


def test_florida_number_at_2030_local_is_refused_while_new_york_is_permitted() -> None:
    us = get_rule_set("us")
    instant = at(NEW_YORK, 20, 30)  # both numbers are in America/New_York
    assert not us.calendar_for(MIAMI).is_open(instant)
    assert us.calendar_for(MANHATTAN).is_open(instant)


@pytest.mark.parametrize("number", [MIAMI, TULSA, BALTIMORE])
def test_florida_oklahoma_maryland_close_at_2000_local(number: str) -> None:
    zone = ZoneInfo(time_zones_for_number(number)[0])
    calendar = get_rule_set("us").calendar_for(number)
    assert calendar.is_open(at(zone, 8, 0))
    assert calendar.is_open(at(zone, 19, 59))
    assert not calendar.is_open(at(zone, 20, 0))
    assert not calendar.is_open(at(zone, 7, 59))


@pytest.mark.parametrize("number", [MIAMI, TULSA, BALTIMORE])
def test_florida_oklahoma_maryland_cap_three_calls_per_24_hours(number: str) -> None:
    assert get_rule_set("us").caps_for(number) == (RollingCap(3, timedelta(hours=24)),)


def test_federal_hours_are_0800_to_2100_recipient_local() -> None:
    calendar = get_rule_set("us-federal").calendar_for(MANHATTAN)
    assert not calendar.is_open(at(NEW_YORK, 7, 59))
    assert calendar.is_open(at(NEW_YORK, 8, 0))
    assert calendar.is_open(at(NEW_YORK, 20, 59))
    assert not calendar.is_open(at(NEW_YORK, 21, 0))
    # the next opening after a refused evening is 08:00 the next morning, local
    opening = calendar.next_open(at(NEW_YORK, 21, 30))
    assert opening == at(NEW_YORK, 8, 0, day=(2026, 3, 12))


def test_new_york_number_has_no_cap() -> None:
    assert get_rule_set("us").caps_for(MANHATTAN) == ()


def test_louisiana_refuses_sundays_and_permits_mondays() -> None:
    calendar = get_rule_set("us").calendar_for(NEW_ORLEANS)
    assert not calendar.is_open(at(CHICAGO, 12, day=(2026, 3, 15)))  # Sunday
    assert calendar.is_open(at(CHICAGO, 12, day=(2026, 3, 16)))  # Monday
    assert not calendar.is_open(at(CHICAGO, 20, 30, day=(2026, 3, 16)))  # after 20:00


def test_louisiana_refuses_its_own_legal_holidays() -> None:
    calendar = get_rule_set("us").calendar_for(NEW_ORLEANS)
    assert not calendar.is_open(at(CHICAGO, 12, day=(2026, 2, 17)))  # Mardi Gras
    assert not calendar.is_open(at(CHICAGO, 12, day=(2026, 11, 26)))  # Thanksgiving
    assert calendar.is_open(at(CHICAGO, 12, day=(2026, 2, 18)))
    # Mardi Gras is a Louisiana holiday, not a federal one: New York may be called
    assert get_rule_set("us").calendar_for(MANHATTAN).is_open(at(NEW_YORK, 12, day=(2026, 2, 17)))


def test_rhode_island_saturday_hours_are_1000_to_1700() -> None:
    calendar = get_rule_set("us").calendar_for(PROVIDENCE)
    saturday = (2026, 3, 14)
    assert not calendar.is_open(at(NEW_YORK, 9, 30, day=saturday))
    assert calendar.is_open(at(NEW_YORK, 10, 30, day=saturday))
    assert not calendar.is_open(at(NEW_YORK, 17, 30, day=saturday))
    assert not calendar.is_open(at(NEW_YORK, 12, day=(2026, 3, 15)))  # Sunday


def test_idaho_number_is_permitted_only_when_boise_and_los_angeles_are_both_in_hours() -> None:
    assert time_zones_for_number(IDAHO) == ("America/Boise", "America/Los_Angeles")
    calendar = get_rule_set("us").calendar_for(IDAHO)
    assert not calendar.is_open(at(BOISE, 8, 30))  # 07:30 in Los Angeles
    assert calendar.is_open(at(BOISE, 9, 0))  # 08:00 in Los Angeles
    assert calendar.is_open(at(BOISE, 20, 59))  # 19:59 in Los Angeles
    assert not calendar.is_open(at(BOISE, 21, 0))  # Boise closes first
    assert calendar.next_open(at(BOISE, 8, 30)) == at(LOS_ANGELES, 8, 0)


def _local_in(instant: datetime, zone: str, start: time, end: time) -> bool:
    return start <= instant.astimezone(ZoneInfo(zone)).time() < end


_INSTANTS = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
)


@settings(max_examples=150, deadline=None)
@given(instant=_INSTANTS)
def test_a_multi_zone_number_is_open_exactly_when_every_zone_is_in_hours(
    instant: datetime,
) -> None:
    calendar = get_rule_set("us-federal").calendar_for(IDAHO)
    expected = all(
        _local_in(instant, zone, time(8), time(21)) for zone in time_zones_for_number(IDAHO)
    )
    assert calendar.is_open(instant) == expected


def test_toll_free_number_is_only_open_when_all_42_zones_are_in_federal_hours() -> None:
    zones = time_zones_for_number(TOLL_FREE)
    assert len(zones) == 42
    calendar = get_rule_set("us").calendar_for(TOLL_FREE)
    # From Pago Pago (UTC-11) round to Guam (UTC+10) the common 08:00-21:00 window
    # is short: 22:00-23:30 UTC in July (08:00-09:30 in Guam, 19:30-21:00 in St John's).
    opening = calendar.next_open(datetime(2026, 7, 10, tzinfo=UTC))
    assert opening == datetime(2026, 7, 10, 22, 0, tzinfo=UTC)
    assert calendar.next_close(opening) == datetime(2026, 7, 10, 23, 30, tzinfo=UTC)
    for zone in zones:
        assert _local_in(opening, zone, time(8), time(21)), zone
    assert not calendar.is_open(datetime(2026, 7, 10, 16, 0, tzinfo=UTC))  # noon in New York


def test_toll_free_number_with_no_common_window_raises_no_permitted_window() -> None:
    nine_to_five = RuleSet(
        "us-office-hours",
        (CallingRule("US 09-17", "US", {"mon-fri": [("09:00", "17:00")]}),),
    )
    with pytest.raises(NoPermittedWindow) as info:
        nine_to_five.calendar_for(TOLL_FREE)
    assert info.value.number == TOLL_FREE
    assert info.value.reason == "its 42 time zones share no permitted calling window"
    assert info.value.zones == time_zones_for_number(TOLL_FREE)
    # a geographic number under the same rules is fine
    assert nine_to_five.calendar_for(MANHATTAN).is_open(at(NEW_YORK, 10))


def test_rules_that_never_permit_a_call_raise_no_permitted_window() -> None:
    never = RuleSet("never", (CallingRule("closed", "US", {}),))
    with pytest.raises(NoPermittedWindow, match="permit no call at any time"):
        never.calendar_for(MANHATTAN)


def test_a_number_a_rule_applies_to_but_without_time_zone_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # phonenumbers knows a zone for every valid regional number today; a number
    # it places in none (e.g. a newly opened range) must not be called at random.
    unplaced = PhoneNumberInfo(e164=MANHATTAN, region="US", time_zones=(), us_state="NY")
    monkeypatch.setattr(compliance, "_facts", lambda e164: unplaced)
    with pytest.raises(NoPermittedWindow) as info:
        get_rule_set("us").calendar_for(MANHATTAN)
    assert info.value.reason == "time zone unknown"
    assert info.value.zones == ()


def test_a_number_no_rule_applies_to_is_always_open() -> None:
    assert get_rule_set("india").calendar_for(MANHATTAN) is ALWAYS_OPEN
    assert get_rule_set("us").calendar_for("+80012345678") is ALWAYS_OPEN  # non-geographic
    assert get_rule_set("us").caps_for(MUMBAI) == ()


# -- France, India, UK -----------------------------------------------------------------------------


def test_france_refuses_the_lunch_break_and_permits_the_afternoon() -> None:
    calendar = get_rule_set("france").calendar_for(PARIS_NUMBER)
    assert not calendar.is_open(at(PARIS, 9, 59))
    assert calendar.is_open(at(PARIS, 10, 0))
    assert calendar.is_open(at(PARIS, 12, 59))
    assert not calendar.is_open(at(PARIS, 13, 30))
    assert calendar.is_open(at(PARIS, 14, 0))
    assert not calendar.is_open(at(PARIS, 20, 0))


def test_france_refuses_weekends_and_bastille_day() -> None:
    calendar = get_rule_set("france").calendar_for(PARIS_NUMBER)
    assert not calendar.is_open(at(PARIS, 11, day=(2026, 3, 14)))  # Saturday
    assert not calendar.is_open(at(PARIS, 11, day=(2026, 7, 14)))  # Tuesday, public holiday
    assert calendar.is_open(at(PARIS, 11, day=(2026, 7, 15)))
    assert calendar.next_open(at(PARIS, 11, day=(2026, 7, 14))) == at(PARIS, 10, day=(2026, 7, 15))


def test_france_caps_four_attempts_per_thirty_days() -> None:
    assert get_rule_set("standard").caps_for(PARIS_NUMBER) == (RollingCap(4, timedelta(days=30)),)


def test_india_refuses_2130_and_permits_2030() -> None:
    calendar = get_rule_set("india").calendar_for(MUMBAI)
    assert time_zones_for_number(MUMBAI) == ("Asia/Calcutta",)
    assert not calendar.is_open(at(KOLKATA, 21, 30))
    assert calendar.is_open(at(KOLKATA, 20, 30))
    assert not calendar.is_open(at(KOLKATA, 8, 59))
    assert calendar.is_open(at(KOLKATA, 9, 0))


def test_uk_uses_0800_to_2100_industry_hours() -> None:
    london = ZoneInfo("Europe/London")
    calendar = get_rule_set("uk").calendar_for(LONDON)
    assert calendar.is_open(at(london, 8, 0))
    assert not calendar.is_open(at(london, 21, 0))
    assert calendar.is_open(at(london, 12, day=(2026, 3, 15)))  # Sundays are not excluded


def test_standard_applies_each_countrys_rules_to_its_own_numbers() -> None:
    standard = get_rule_set("standard")
    assert not standard.calendar_for(MIAMI).is_open(at(NEW_YORK, 20, 30))
    assert standard.calendar_for(MANHATTAN).is_open(at(NEW_YORK, 20, 30))
    assert not standard.calendar_for(PARIS_NUMBER).is_open(at(PARIS, 13, 30))
    assert not standard.calendar_for(MUMBAI).is_open(at(KOLKATA, 21, 30))
    assert standard.calendar_for("+81312345678") is ALWAYS_OPEN  # Japan: no rule


# -- data and serialization ------------------------------------------------------------------------


def test_builtin_rule_sets_are_registered() -> None:
    assert set(BUILTIN_RULE_SETS) == {"us-federal", "us", "france", "india", "uk", "standard"}
    assert set(BUILTIN_RULE_SETS) <= set(rule_set_names())
    for name, rule_set in BUILTIN_RULE_SETS.items():
        assert get_rule_set(name) is rule_set
        assert rule_set.name == name
        assert all(rule.source for rule in rule_set.rules)


def test_standard_holds_every_other_builtin_rule() -> None:
    standard = set(get_rule_set("standard").rules)
    for name in ("us", "france", "india", "uk"):
        assert set(get_rule_set(name).rules) <= standard


def test_unknown_rule_set_name_is_not_found() -> None:
    with pytest.raises(NotFound) as info:
        get_rule_set("mars")
    assert info.value.kind == "rule set"
    assert info.value.id == "mars"
    assert isinstance(info.value, LookupError)


def test_registered_rule_sets_can_be_looked_up_and_replaced() -> None:
    first = RuleSet("test-register", (CallingRule("x", "IN", {"daily": [("10:00", "18:00")]}),))
    register_rule_set(first)
    assert get_rule_set("test-register") is first
    second = RuleSet("test-register", ())
    register_rule_set(second)
    assert get_rule_set("test-register") is second


def test_builtin_rule_sets_cannot_be_replaced() -> None:
    with pytest.raises(ConfigurationError) as info:
        register_rule_set(RuleSet("us", ()))
    assert info.value.field == "name"
    assert get_rule_set("us") is BUILTIN_RULE_SETS["us"]


@pytest.mark.parametrize("name", sorted(BUILTIN_RULE_SETS))
def test_builtin_rule_sets_round_trip_through_json(name: str) -> None:
    rule_set = get_rule_set(name)
    data = json.loads(json.dumps(rule_set.to_dict()))
    assert RuleSet.from_dict(data) == rule_set


def test_to_dict_shape() -> None:
    rule = get_rule_set("france").to_dict()["rules"][0]
    assert rule["country"] == "FR"
    assert rule["hours"]["monday"] == [
        {"start": "10:00", "end": "13:00"},
        {"start": "14:00", "end": "20:00"},
    ]
    assert rule["hours"]["saturday"] == []
    assert rule["no_public_holidays"] is True
    assert rule["caps"] == [{"type": "rolling", "max_attempts": 4, "window_seconds": 2592000}]


def test_from_dict_fills_defaults_and_closes_missing_days() -> None:
    rule_set = RuleSet.from_dict(
        {
            "name": "mine",
            "rules": [
                {
                    "name": "weekday mornings",
                    "country": "in",
                    "hours": {"mon-fri": [["09:00", "12:00"]]},
                }
            ],
        }
    )
    (rule,) = rule_set.rules
    assert rule.country == "IN"
    assert rule.hours[Weekday.MONDAY] == (TimeSlot.parse("09:00", "12:00"),)
    assert rule.hours[Weekday.SATURDAY] == ()
    assert (rule.states, rule.no_public_holidays, rule.caps, rule.source) == (
        frozenset(),
        False,
        (),
        "",
    )


def _us_data() -> dict[str, Any]:
    return get_rule_set("us").to_dict()


def _set(path: str, value: object) -> dict[str, Any]:
    """The "us" rule set's JSON with ``value`` at ``path`` (``.``-separated, ints index)."""
    data = copy.deepcopy(_us_data())
    *parents, last = path.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is _DELETE:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("rules.1.hours.monday.0.start", "25:00", "rules[1].hours.monday[0].start"),
        ("rules.1.hours.monday.0", {"start": "08:00"}, "rules[1].hours.monday[0]"),
        ("rules.1.hours.monday", "08:00-20:00", "rules[1].hours.monday"),
        ("rules.1.hours.funday", [], "rules[1].hours.funday"),
        ("rules.1.hours", [], "rules[1].hours"),
        ("rules.1.caps.0.max_attempts", 0, "rules[1].caps[0].max_attempts"),
        ("rules.1.caps.0.max_attempts", "3", "rules[1].caps[0].max_attempts"),
        ("rules.1.caps.0.window_seconds", -1, "rules[1].caps[0].window_seconds"),
        ("rules.1.caps.0.type", "daily", "rules[1].caps[0].type"),
        ("rules.1.caps", {}, "rules[1].caps"),
        ("rules.2.states", ["XX"], "rules[2].states"),
        ("rules.2.states", "OK", "rules[2].states"),
        ("rules.2.states", [1], "rules[2].states[0]"),
        ("rules.0.country", "USA", "rules[0].country"),
        ("rules.0.no_public_holidays", "yes", "rules[0].no_public_holidays"),
        ("rules.0.hours", _DELETE, "rules[0].hours"),
        ("rules.0.name", _DELETE, "rules[0].name"),
        ("rules.0.surprise", 1, "rules[0].surprise"),
        ("rules.3", "Louisiana", "rules[3]"),
        ("rules", {}, "rules"),
        ("name", 7, "name"),
    ],
)
def test_from_dict_names_the_dotted_field_of_bad_input(
    path: str, value: object, field: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        RuleSet.from_dict(_set(path, value))
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


def test_from_dict_refuses_states_outside_the_us() -> None:
    data = {
        "name": "x",
        "rules": [{"name": "r", "country": "FR", "states": ["FL"], "hours": {}}],
    }
    with pytest.raises(ConfigurationError) as info:
        RuleSet.from_dict(data)
    assert info.value.field == "rules[0].states"


def test_from_dict_refuses_a_non_object() -> None:
    with pytest.raises(ConfigurationError, match="must be an object"):
        RuleSet.from_dict([])  # type: ignore[arg-type]


def test_calling_rule_validates_in_python_too() -> None:
    with pytest.raises(ConfigurationError) as info:
        CallingRule("x", "US", {"mon": [("08:00", "25:00")]})
    assert info.value.field == "hours.mon[0].end"
    with pytest.raises(ConfigurationError) as info:
        CallingRule("x", "US", {}, states=frozenset({"ZZ"}))
    assert info.value.field == "states"
    with pytest.raises(ConfigurationError) as info:
        RuleSet("x", ("not a rule",))  # type: ignore[arg-type]
    assert info.value.field == "rules[0]"


def test_rules_are_hashable_values() -> None:
    rule = CallingRule("x", "us", {Weekday.MONDAY: (TimeSlot.parse("08:00", "21:00"),)})
    same = CallingRule("x", "US", {"monday": [("08:00", "21:00")]})
    assert rule == same
    assert hash(rule) == hash(same)
    assert rule.hours[Weekday.SUNDAY] == ()
    assert len({get_rule_set("us"), get_rule_set("us")}) == 1

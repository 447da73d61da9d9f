"""Calling rules as data: when and how often a number may be called.

A :class:`CallingRule` says, for numbers of one country (and optionally some US
states, presumed from the area code), which recipient-local hours are permitted
on each weekday, whether public holidays are off, and which rolling caps apply
(e.g. 3 attempts per 24 h). A :class:`RuleSet` is a named tuple of rules; for a
number it picks the rules that apply and builds one
:class:`~outdial.calendar.Calendar` that is open only when *every* applicable
rule permits a call in *every* time zone of the number.

Built-in rule sets (``get_rule_set(name)``): ``"us-federal"``, ``"us"``,
``"france"``, ``"india"``, ``"uk"`` and ``"standard"`` (all of them, each rule
applying to its own country). They are plain data: read them with
:meth:`RuleSet.to_dict`, correct or extend them with :meth:`RuleSet.from_dict`
and :func:`register_rule_set`.

Everything here is pure: no clock, no I/O. The one fixed instant used is
:data:`WINDOW_CHECK_FROM`, the start of the horizon over which
:meth:`RuleSet.calendar_for` proves a number has some permitted window.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, time, timedelta, timezone
from types import MappingProxyType
from typing import Any

import attrs
import cattrs

from outdial.calendar import (
    ALWAYS_OPEN,
    BusinessHours,
    Calendar,
    CalendarIntersection,
    HolidayCalendar,
    TimeSlot,
    Weekday,
)
from outdial.errors import ConfigurationError, NoPermittedWindow, NotFound
from outdial.phone import PhoneNumberInfo, parse_phone
from outdial.retry import RollingCap

__all__ = [
    "BUILTIN_RULE_SETS",
    "WINDOW_CHECK_FROM",
    "WINDOW_CHECK_HORIZON",
    "CallingRule",
    "RuleSet",
    "get_rule_set",
    "register_rule_set",
    "rule_set_names",
]

#: Start of the horizon over which :meth:`RuleSet.calendar_for` looks for a
#: permitted window (a fixed instant: the domain core reads no clock).
WINDOW_CHECK_FROM = datetime(2026, 1, 1, tzinfo=timezone.utc)
#: How far past :data:`WINDOW_CHECK_FROM` a window must appear (a year and a
#: week: both DST seasons, every weekday, every holiday).
WINDOW_CHECK_HORIZON = timedelta(days=373)

# The 50 states and DC, as CallingRule.states spells them.
_US_STATES = frozenset(
    "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE "  # noqa: SIM905
    "NV NH NJ NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY".split()
)
_REGION = re.compile(r"[A-Z]{2}")


# -- values ----------------------------------------------------------------------------------


def _to_hours(value: Mapping[Any, Any]) -> Mapping[Weekday, tuple[TimeSlot, ...]]:
    """An immutable, hashable schedule holding all seven weekdays (absent ones closed).

    Accepts what :class:`~outdial.calendar.BusinessHours` accepts for ``schedule``
    (weekday keys, names or ranges such as ``"mon-fri"``; TimeSlots or
    ``("HH:MM", "HH:MM")`` pairs); errors name ``hours.<day>[i]...``.
    """
    try:
        return BusinessHours("UTC", value).schedule
    except ConfigurationError as exc:
        field = exc.field
        if field == "schedule" or field.startswith("schedule."):
            field = "hours" + field[len("schedule") :]
        raise _renamed(exc, field) from None


def _to_states(value: Iterable[str]) -> frozenset[str]:
    if isinstance(value, str):
        raise ConfigurationError("states", value, "must be a collection of states, not one string")
    return frozenset(state.upper() for state in value)


def _to_caps(value: Iterable[RollingCap]) -> tuple[RollingCap, ...]:
    return tuple(value)


def _to_region(value: str) -> str:
    return value.upper() if isinstance(value, str) else value


@attrs.frozen(cache_hash=True)
class CallingRule:
    """When numbers of one ``country`` (and, for the US, some ``states``) may be called.

    ``hours`` are the permitted recipient-local time slots per weekday; a weekday
    that is absent (or has no slots) permits no call. ``states`` are two-letter
    US states matched on the number's area code (empty: the whole country).
    ``no_public_holidays`` closes the country's (and state's) public holidays.
    ``caps`` are rolling caps on attempts per number per campaign. ``source``
    names the statute or guidance the rule comes from.
    """

    name: str
    country: str = attrs.field(converter=_to_region)
    hours: Mapping[Weekday, tuple[TimeSlot, ...]] = attrs.field(converter=_to_hours)
    states: frozenset[str] = attrs.field(default=frozenset(), converter=_to_states)
    no_public_holidays: bool = False
    caps: tuple[RollingCap, ...] = attrs.field(default=(), converter=_to_caps)
    source: str = ""

    @country.validator
    def _check_country(self, _attribute: attrs.Attribute[str], value: str) -> None:
        if not isinstance(value, str) or not _REGION.fullmatch(value):
            raise ConfigurationError("country", value, "must be an ISO 3166 region like 'US'")

    @states.validator
    def _check_states(
        self, _attribute: attrs.Attribute[frozenset[str]], value: frozenset[str]
    ) -> None:
        if value and self.country != "US":
            raise ConfigurationError("states", sorted(value), "only apply to country 'US'")
        unknown = sorted(value - _US_STATES)
        if unknown:
            raise ConfigurationError("states", unknown, "are not two-letter US states")

    @caps.validator
    def _check_caps(
        self, _attribute: attrs.Attribute[tuple[RollingCap, ...]], value: tuple[RollingCap, ...]
    ) -> None:
        for index, cap in enumerate(value):
            if not isinstance(cap, RollingCap):
                raise ConfigurationError(f"caps[{index}]", cap, "must be a RollingCap")

    def applies_to(self, info: PhoneNumberInfo) -> bool:
        """Whether this rule governs a number (its region, and its state when given)."""
        return self._governs(info.region, info.us_state)

    def _governs(self, region: str | None, us_state: str | None) -> bool:
        return region == self.country and (not self.states or us_state in self.states)

    def business_hours(self, zone: str, us_state: str | None = None) -> BusinessHours:
        """The rule's permitted hours in one time zone, holidays included if it says so.

        Holidays are the country's (``HolidayCalendar(country)``), and for a US
        rule also the state's of the number (``HolidayCalendar("US", us_state)``).
        """
        return _business_hours(self, zone, us_state if self.country == "US" else None)


def _to_rules(value: Iterable[CallingRule]) -> tuple[CallingRule, ...]:
    rules = tuple(value)
    for index, rule in enumerate(rules):
        if not isinstance(rule, CallingRule):
            raise ConfigurationError(f"rules[{index}]", rule, "must be a CallingRule")
    return rules


@attrs.frozen(cache_hash=True)
class RuleSet:
    """A named set of :class:`CallingRule` s; each rule applies to its own numbers."""

    name: str
    rules: tuple[CallingRule, ...] = attrs.field(converter=_to_rules)

    def rules_for(self, e164: str) -> tuple[CallingRule, ...]:
        """The rules that govern ``e164`` (normalized first; invalid text raises)."""
        info = _facts(e164)
        return tuple(rule for rule in self.rules if rule.applies_to(info))

    def calendar_for(self, e164: str) -> Calendar:
        """When ``e164`` may be called: every applicable rule, in every zone of the number.

        An instant is permitted only if it is permitted in each of the number's
        zones (``+1 208`` numbers: Boise and Los Angeles; ``+1 800`` numbers: 42
        zones from Pago Pago to Guam, whose common 08:00-21:00 window is
        22:00-23:30 UTC in summer). A number no rule applies to gets
        :data:`outdial.calendar.ALWAYS_OPEN` (the campaign's own calling window
        still applies). A number some rule applies to but whose time zone is
        unknown, or whose zones share no permitted instant within
        :data:`WINDOW_CHECK_HORIZON` of :data:`WINDOW_CHECK_FROM`, raises
        :class:`NoPermittedWindow` rather than being dialled at a random hour.
        Results are cached per (rule set, region, state, zones).
        """
        return _calendar_for(self, e164)

    def caps_for(self, e164: str) -> tuple[RollingCap, ...]:
        """Rolling caps of every applicable rule (duplicates once), per number per campaign."""
        caps = (cap for rule in self.rules_for(e164) for cap in rule.caps)
        return tuple(dict.fromkeys(caps))

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape (see :meth:`from_dict`)."""
        data: dict[str, Any] = _converter.unstructure(self, RuleSet)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RuleSet:
        """Build from the JSON shape; bad input raises ConfigurationError naming the field.

        ``{"name": ..., "rules": [{"name", "country", "states", "hours":
        {"monday": [{"start": "08:00", "end": "21:00"}], ...}, "no_public_holidays",
        "caps": [{"type": "rolling", "max_attempts": 3, "window_seconds": 86400}],
        "source"}]}``. Weekdays left out of ``hours`` permit no call.
        """
        rule_set: RuleSet = _converter.structure(data, RuleSet)
        return rule_set


@functools.lru_cache(maxsize=4096)
def _business_hours(rule: CallingRule, zone: str, subdivision: str | None) -> BusinessHours:
    holidays = _holiday_calendar(rule.country, subdivision) if rule.no_public_holidays else None
    return BusinessHours(zone, rule.hours, holidays=holidays)


@functools.lru_cache(maxsize=256)
def _holiday_calendar(country: str, subdivision: str | None) -> HolidayCalendar:
    # Shared instances: a HolidayCalendar caches the years it has loaded.
    return HolidayCalendar(country, subdivision)


@functools.lru_cache(maxsize=65536)
def _facts(e164: str) -> PhoneNumberInfo:
    return parse_phone(e164)


def _calendar_for(rule_set: RuleSet, e164: str) -> Calendar:
    info = _facts(e164)
    found = _calendar_or_reason(rule_set, info.region, info.us_state, info.time_zones)
    if isinstance(found, str):
        raise NoPermittedWindow(info.e164, found, info.time_zones)
    return found


@functools.lru_cache(maxsize=4096)
def _calendar_or_reason(
    rule_set: RuleSet, region: str | None, us_state: str | None, zones: tuple[str, ...]
) -> Calendar | str:
    """The calendar, or why there is none; shared by every number with the same facts.

    Cached because proving that several zones never share a window takes a
    while, and because a campaign asks again for every attempt.
    """
    rules = [rule for rule in rule_set.rules if rule._governs(region, us_state)]
    if not rules:
        return ALWAYS_OPEN
    if not zones:
        return "time zone unknown"
    parts = [rule.business_hours(zone, us_state) for rule in rules for zone in zones]
    calendar: Calendar = parts[0] if len(parts) == 1 else CalendarIntersection(tuple(parts))
    opening = calendar.next_open(WINDOW_CHECK_FROM)
    if opening is None or opening > WINDOW_CHECK_FROM + WINDOW_CHECK_HORIZON:
        if len(zones) > 1:
            return f"its {len(zones)} time zones share no permitted calling window"
        return "its calling rules permit no call at any time"
    return calendar


# -- registry ----------------------------------------------------------------------------------


def _slots(*pairs: tuple[str, str]) -> tuple[TimeSlot, ...]:
    return tuple(TimeSlot.parse(start, end) for start, end in pairs)


def _every_day(*pairs: tuple[str, str]) -> dict[Weekday, tuple[TimeSlot, ...]]:
    return dict.fromkeys(Weekday, _slots(*pairs))


def _days(days: Iterable[Weekday], *pairs: tuple[str, str]) -> dict[Weekday, tuple[TimeSlot, ...]]:
    return dict.fromkeys(days, _slots(*pairs))


_MON_FRI = (Weekday.MONDAY, Weekday.TUESDAY, Weekday.WEDNESDAY, Weekday.THURSDAY, Weekday.FRIDAY)
_MON_SAT = (*_MON_FRI, Weekday.SATURDAY)
_DAY = timedelta(hours=24)

_US_FEDERAL = CallingRule(
    name="US federal (TCPA)",
    country="US",
    hours=_every_day(("08:00", "21:00")),
    source="47 CFR 64.1200(c)(1) (TCPA); 16 CFR 310.4(c) (FTC Telemarketing Sales Rule)",
)
_US_STATE_RULES = (
    CallingRule(
        name="Florida",
        country="US",
        states=frozenset({"FL"}),
        hours=_every_day(("08:00", "20:00")),
        caps=(RollingCap(3, _DAY),),
        source="Fla. Stat. 501.616(6) (Florida Telephone Solicitation Act, 2021)",
    ),
    CallingRule(
        name="Oklahoma",
        country="US",
        states=frozenset({"OK"}),
        hours=_every_day(("08:00", "20:00")),
        caps=(RollingCap(3, _DAY),),
        source="Okla. Stat. tit. 15, 775C.4 (Telephone Solicitation Act of 2022)",
    ),
    CallingRule(
        name="Maryland",
        country="US",
        states=frozenset({"MD"}),
        hours=_every_day(("08:00", "20:00")),
        caps=(RollingCap(3, _DAY),),
        source="Md. Code, Com. Law 14-4501 et seq. (Stop the Spam Calls Act of 2023)",
    ),
    CallingRule(
        name="Louisiana",
        country="US",
        states=frozenset({"LA"}),
        hours=_days(_MON_SAT, ("08:00", "20:00")),
        no_public_holidays=True,
        source="La. R.S. 45:844.14 (no telephone solicitation on Sundays or legal holidays)",
    ),
    CallingRule(
        name="Alabama",
        country="US",
        states=frozenset({"AL"}),
        hours=_days(_MON_SAT, ("08:00", "20:00")),
        no_public_holidays=True,
        source="Ala. Admin. Code r. 770-X-7 (Alabama PSC telephone solicitation rules)",
    ),
    CallingRule(
        name="Mississippi",
        country="US",
        states=frozenset({"MS"}),
        hours=_days(_MON_SAT, ("08:00", "20:00")),
        no_public_holidays=True,
        source="Miss. Code Ann. 77-3-725 (Telephone Solicitation Act)",
    ),
    CallingRule(
        name="Rhode Island",
        country="US",
        states=frozenset({"RI"}),
        hours={
            **_days(_MON_FRI, ("09:00", "18:00")),
            **_days((Weekday.SATURDAY,), ("10:00", "17:00")),
        },
        no_public_holidays=True,
        source="R.I. Gen. Laws 5-61-3.6 and 5-61-2 (hours of operation)",
    ),
    CallingRule(
        name="Utah",
        country="US",
        states=frozenset({"UT"}),
        hours=_days(_MON_SAT, ("08:00", "21:00")),
        no_public_holidays=True,
        source="Utah Code 13-26-4 (Telephone Fraud Prevention Act)",
    ),
)
_FRANCE = CallingRule(
    name="France",
    country="FR",
    hours=_days(_MON_FRI, ("10:00", "13:00"), ("14:00", "20:00")),
    no_public_holidays=True,
    caps=(RollingCap(4, timedelta(days=30)),),
    source="Code de la consommation L.223-1 and D.223-9 (décret 2022-1313), since 2023-03-01",
)
_INDIA = CallingRule(
    name="India (TRAI)",
    country="IN",
    hours=_every_day(("09:00", "21:00")),
    source="TRAI Telecom Commercial Communications Customer Preference Regulations 2018",
)
_UK = CallingRule(
    name="United Kingdom (industry guidance)",
    country="GB",
    hours=_every_day(("08:00", "21:00")),
    source=(
        "No statutory hours (Ofcom's persistent-misuse policy sets none); "
        "08:00-21:00 follows common industry guidance"
    ),
)

BUILTIN_RULE_SETS: Mapping[str, RuleSet] = MappingProxyType(
    {
        rule_set.name: rule_set
        for rule_set in (
            RuleSet("us-federal", (_US_FEDERAL,)),
            RuleSet("us", (_US_FEDERAL, *_US_STATE_RULES)),
            RuleSet("france", (_FRANCE,)),
            RuleSet("india", (_INDIA,)),
            RuleSet("uk", (_UK,)),
            RuleSet("standard", (_US_FEDERAL, *_US_STATE_RULES, _FRANCE, _INDIA, _UK)),
        )
    }
)

_registry: dict[str, RuleSet] = dict(BUILTIN_RULE_SETS)


def get_rule_set(name: str) -> RuleSet:
    """The registered rule set called ``name``; :class:`NotFound` if there is none."""
    try:
        return _registry[name]
    except KeyError:
        raise NotFound("rule set", name) from None


def register_rule_set(rule_set: RuleSet) -> None:
    """Make ``rule_set`` available to :func:`get_rule_set` under its name.

    Registering a name again replaces the earlier set; built-in names cannot be
    replaced (register a correction under a new name instead).
    """
    if not isinstance(rule_set, RuleSet):
        raise ConfigurationError("rule_set", rule_set, "must be a RuleSet")
    if rule_set.name in BUILTIN_RULE_SETS and rule_set != BUILTIN_RULE_SETS[rule_set.name]:
        raise ConfigurationError("name", rule_set.name, "is a built-in rule set name")
    _registry[rule_set.name] = rule_set


def rule_set_names() -> tuple[str, ...]:
    """Names of every registered rule set, sorted."""
    return tuple(sorted(_registry))


# -- serialization (cattrs, private) -----------------------------------------------------------
#
# Structuring goes through hand-written hooks so that every error is a
# ConfigurationError naming the dotted JSON field (``rules[1].hours.monday[0].start``).


def _join(prefix: str, field: str) -> str:
    if not field:
        return prefix
    if not prefix:
        return field
    return prefix + field if field.startswith("[") else f"{prefix}.{field}"


def _renamed(exc: ConfigurationError, field: str) -> ConfigurationError:
    """The same error (same class where its constructor allows) on another field."""
    try:
        return type(exc)(field, exc.value, exc.reason)
    except TypeError:
        return ConfigurationError(field, exc.value, exc.reason)


@contextlib.contextmanager
def _within(prefix: str) -> Iterator[None]:
    """Re-raise configuration errors from the block with ``prefix`` on their field."""
    try:
        yield
    except ConfigurationError as exc:
        raise _renamed(exc, _join(prefix, exc.field)) from exc


def _mapping(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigurationError("", value, f"must be an object ({what})")
    return value


def _list(value: object, what: str) -> Sequence[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ConfigurationError("", value, f"must be a list ({what})")
    return value


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise ConfigurationError("", value, "must be a string")
    return value


def _fields(
    raw: Mapping[str, Any], known: Sequence[str], required: Sequence[str], what: str
) -> None:
    for key in raw:
        if key not in known:
            raise ConfigurationError(
                key, raw[key], f"is not a field of {what} ({', '.join(known)})"
            )
    for key in required:
        if key not in raw:
            raise ConfigurationError(key, None, "is required")


def _hhmm(value: time, *, end: bool = False) -> str:
    if end and value == time(0):
        return "24:00"
    return f"{value.hour:02d}:{value.minute:02d}"


def _unstructure_hours(hours: Mapping[Weekday, tuple[TimeSlot, ...]]) -> dict[str, Any]:
    return {
        day.name.lower(): [
            {"start": _hhmm(slot.start), "end": _hhmm(slot.end, end=True)}
            for slot in hours.get(day, ())
        ]
        for day in Weekday
    }


def _unstructure_cap(cap: RollingCap) -> dict[str, Any]:
    seconds = cap.window.total_seconds()
    return {
        "type": "rolling",
        "max_attempts": cap.max_attempts,
        "window_seconds": int(seconds) if seconds.is_integer() else seconds,
    }


def _unstructure_rule(rule: CallingRule) -> dict[str, Any]:
    return {
        "name": rule.name,
        "country": rule.country,
        "states": sorted(rule.states),
        "hours": _unstructure_hours(rule.hours),
        "no_public_holidays": rule.no_public_holidays,
        "caps": [_unstructure_cap(cap) for cap in rule.caps],
        "source": rule.source,
    }


def _unstructure_rule_set(rule_set: RuleSet) -> dict[str, Any]:
    return {"name": rule_set.name, "rules": [_unstructure_rule(rule) for rule in rule_set.rules]}


def _structure_cap(data: object) -> RollingCap:
    raw = _mapping(data, '{"type": "rolling", "max_attempts": N, "window_seconds": S}')
    _fields(
        raw,
        ("type", "max_attempts", "window_seconds"),
        ("max_attempts", "window_seconds"),
        "a rolling cap",
    )
    if "type" in raw and raw["type"] != "rolling":
        raise ConfigurationError(
            "type", raw["type"], "must be 'rolling' (calling rules take rolling caps)"
        )
    count, seconds = raw["max_attempts"], raw["window_seconds"]
    if isinstance(count, bool) or not isinstance(count, int):
        raise ConfigurationError("max_attempts", count, "must be an integer")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ConfigurationError("window_seconds", seconds, "must be a positive number of seconds")
    try:
        window = timedelta(seconds=seconds)
    except OverflowError:
        raise ConfigurationError("window_seconds", seconds, "is too large") from None
    try:
        return RollingCap(count, window)
    except ConfigurationError as exc:
        key = {"max_attempts": "max_attempts", "window": "window_seconds"}.get(exc.field, "")
        raise ConfigurationError(key, raw.get(key, exc.value), exc.reason) from exc


_RULE_FIELDS = ("name", "country", "states", "hours", "no_public_holidays", "caps", "source")


def _structure_rule(data: object, _type: object = None) -> CallingRule:
    raw = _mapping(data, "a calling rule")
    _fields(raw, _RULE_FIELDS, ("name", "country", "hours"), "a calling rule")
    kwargs: dict[str, Any] = {}
    for key in ("name", "country", "source"):
        if key in raw:
            with _within(key):
                kwargs[key] = _str(raw[key])
    if "states" in raw:
        with _within("states"):
            items = _list(raw["states"], "of two-letter US states")
        states = []
        for index, item in enumerate(items):
            with _within(f"states[{index}]"):
                states.append(_str(item))
        kwargs["states"] = frozenset(states)
    if "no_public_holidays" in raw:
        value = raw["no_public_holidays"]
        if not isinstance(value, bool):
            raise ConfigurationError("no_public_holidays", value, "must be true or false")
        kwargs["no_public_holidays"] = value
    with _within("hours"):
        kwargs["hours"] = _mapping(raw["hours"], "weekday name -> list of time slots")
    if "caps" in raw:
        with _within("caps"):
            items = _list(raw["caps"], "of rolling caps")
        caps = []
        for index, item in enumerate(items):
            with _within(f"caps[{index}]"):
                caps.append(_structure_cap(item))
        kwargs["caps"] = tuple(caps)
    return CallingRule(**kwargs)


def _structure_rule_set(data: object, _type: object = None) -> RuleSet:
    raw = _mapping(data, "a rule set")
    _fields(raw, ("name", "rules"), ("name", "rules"), "a rule set")
    with _within("name"):
        name = _str(raw["name"])
    with _within("rules"):
        items = _list(raw["rules"], "of calling rules")
    rules = []
    for index, item in enumerate(items):
        with _within(f"rules[{index}]"):
            rules.append(_structure_rule(item))
    return RuleSet(name, tuple(rules))


_converter = cattrs.Converter()
_converter.register_unstructure_hook(RuleSet, _unstructure_rule_set)
_converter.register_unstructure_hook(CallingRule, _unstructure_rule)
_converter.register_structure_hook(RuleSet, _structure_rule_set)
_converter.register_structure_hook(CallingRule, _structure_rule)

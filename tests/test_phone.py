"""Phone number normalization, time zones, US states and masking."""

from __future__ import annotations

import json
import random
from importlib import resources
from zoneinfo import ZoneInfo

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberType
from phonenumbers import timezone as pn_timezone
from phonenumbers.tzdata import TIMEZONE_DATA

from outdial.errors import ConfigurationError, InvalidPhoneNumber
from outdial.phone import (
    PhoneNumberInfo,
    _classify,
    _e164_and_zones,
    _zones_by_prefix,
    mask_phone,
    normalize_phone,
    parse_phone,
    time_zones_for_number,
    us_state_for_number,
)

# -- normalization ------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["9876543210", "09876543210", "919876543210"])
def test_indian_seed_forms_normalize_to_the_same_e164(text: str) -> None:
    assert normalize_phone(text, "IN") == "+919876543210"


@pytest.mark.parametrize(
    ("text", "region", "expected"),
    [
        # India, written every way people write it
        ("+91 98765 43210", None, "+919876543210"),
        ("0091 98765 43210", None, "+919876543210"),
        ("(+91) 98765-43210", None, "+919876543210"),
        ("98765.43210", "IN", "+919876543210"),
        # United States
        ("+1 (212) 867-5309", None, "+12128675309"),
        ("(212) 867-5309", "US", "+12128675309"),
        ("212.867.5309", "US", "+12128675309"),
        ("1-212-867-5309", "US", "+12128675309"),
        ("  +1 212 867 5309  ", None, "+12128675309"),
        ("011 44 20 7946 0958", "US", "+442079460958"),
        # United Kingdom
        ("+44 20 7946 0958", None, "+442079460958"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("+44 (0)20 7946 0958", None, "+442079460958"),
        ("0044 7911 123456", None, "+447911123456"),
        ("07911 123456", "GB", "+447911123456"),
        # France
        ("+33 1 42 68 53 00", None, "+33142685300"),
        ("01 42 68 53 00", "FR", "+33142685300"),
        ("01.42.68.53.00", "FR", "+33142685300"),
        ("06-12-34-56-78", "FR", "+33612345678"),
        ("0033 6 12 34 56 78", "US", "+33612345678"),
        # a default region does not override an explicit country code
        ("+33 1 42 68 53 00", "IN", "+33142685300"),
        # region names are case-insensitive
        ("020 7946 0958", "gb", "+442079460958"),
    ],
)
def test_accepted_formats_normalize_to_e164(text: str, region: str | None, expected: str) -> None:
    assert normalize_phone(text, region) == expected


@pytest.mark.parametrize(
    ("text", "region", "reason"),
    [
        ("", None, "empty"),
        ("   ", "US", "empty"),
        ("1-800-FLOWERS", "US", "contains letters"),
        ("+1 212 867 5309 x12", None, "contains letters"),
        ("+1 212 867 5309 ext. 12", None, "contains letters"),
        ("n/a", "US", "contains letters"),
        ("+1 212 867 5309 #123", None, "extensions are not supported"),
        ("212-867-5309,45", "US", "extensions are not supported"),
        ("02081234567", None, "no country code and no default region"),
        ("9876543210", None, "no country code and no default region"),
        ("+999 123 4567", None, "invalid country code"),
        ("--", None, "not a phone number"),
        ("+", None, "not a phone number"),
        ("123", "US", "too short"),
        ("+1 212 867 530", None, "too short"),
        ("+44 20 7946 09588", None, "too long"),
        ("+41 44 668 18 0000", None, "wrong length for region CH"),
        # possible (right length) but not valid: reserved and unassigned ranges
        ("+1 555 010 0000", None, "not a valid number for region US"),
        ("+1 212 111 1111", None, "not a valid number for region US"),
        ("98765 4321", "IN", "not a valid number for region IN"),
        ("+91 98765 4321", None, "not a valid number for region IN"),
        ("+44 20 7946 095", None, "not a valid number for region GB"),
    ],
)
def test_refused_numbers_say_why(text: str, region: str | None, reason: str) -> None:
    with pytest.raises(InvalidPhoneNumber) as info:
        normalize_phone(text, region)
    assert info.value.reason == reason
    assert info.value.text == text
    assert reason in str(info.value)


def test_invalid_phone_number_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="too short"):
        normalize_phone("123", "US")


def test_unknown_default_region_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        normalize_phone("212 867 5309", "XX")
    assert info.value.field == "default_region"
    assert info.value.value == "XX"


def _valid_numbers(count: int, seed: int) -> list[phonenumbers.PhoneNumber]:
    rng = random.Random(seed)
    regions = ["US", "GB", "FR", "IN", "DE", "AU", "BR", "JP", "ZA", "CA"]
    out: list[phonenumbers.PhoneNumber] = []
    while len(out) < count:
        region = rng.choice(regions)
        example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
        assert example is not None
        nsn = phonenumbers.national_significant_number(example)
        digits = nsn[:3] + "".join(rng.choice("0123456789") for _ in range(len(nsn) - 3))
        number = phonenumbers.parse(f"+{example.country_code}{digits}", None)
        if phonenumbers.is_valid_number(number):
            out.append(number)
    return out


@settings(max_examples=60, deadline=None)
@given(
    number=st.sampled_from(_valid_numbers(200, seed=7)),
    shape=st.sampled_from(
        [
            phonenumbers.PhoneNumberFormat.E164,
            phonenumbers.PhoneNumberFormat.INTERNATIONAL,
            phonenumbers.PhoneNumberFormat.NATIONAL,
        ]
    ),
)
def test_every_written_form_of_a_valid_number_gives_its_e164(
    number: phonenumbers.PhoneNumber, shape: int
) -> None:
    region = phonenumbers.region_code_for_number(number)
    expected = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    text = phonenumbers.format_number(number, shape)
    assert normalize_phone(text, region) == expected
    # normalizing is idempotent, with or without a region
    assert normalize_phone(expected) == expected
    assert normalize_phone(expected, "FR") == expected


@settings(max_examples=200, deadline=None)
@given(
    text=st.one_of(
        st.text(max_size=25),
        st.text(alphabet="0123456789+-(). ", max_size=20),
    )
)
def test_arbitrary_text_is_either_e164_or_invalid_phone_number(text: str) -> None:
    try:
        e164 = normalize_phone(text, "US")
    except InvalidPhoneNumber as exc:
        reason = exc.reason
        assert reason
        return
    assert e164.startswith("+")
    assert e164[1:].isdigit()
    assert phonenumbers.is_valid_number(phonenumbers.parse(e164, None))


# -- parse_phone -------------------------------------------------------------------------


def test_parse_phone_gives_everything_from_one_parse() -> None:
    assert parse_phone("(305) 372-5000", "US") == PhoneNumberInfo(
        e164="+13053725000",
        region="US",
        time_zones=("America/New_York",),
        us_state="FL",
    )


def test_parse_phone_for_india_has_no_us_state() -> None:
    info = parse_phone("09876543210", "IN")
    assert info.e164 == "+919876543210"
    assert info.region == "IN"
    assert info.time_zones == ("Asia/Calcutta",)
    assert info.us_state is None


def test_parse_phone_for_a_canadian_number_has_region_ca_and_no_state() -> None:
    info = parse_phone("+1 416 204 5000")
    assert info.region == "CA"
    assert info.us_state is None
    assert info.time_zones == ("America/Toronto",)


def test_parse_phone_refuses_what_normalize_phone_refuses() -> None:
    with pytest.raises(InvalidPhoneNumber, match="not a valid number for region US"):
        parse_phone("+1 555 010 0000")


def test_non_geographic_numbers_have_no_region_and_no_zone() -> None:
    info = parse_phone("+800 1234 5678")
    assert info.region is None
    assert info.time_zones == ()


# -- time zones -----------------------------------------------------------------------------


def test_idaho_area_code_spans_boise_and_los_angeles() -> None:
    assert time_zones_for_number("+12085550100") == ("America/Boise", "America/Los_Angeles")


def test_india_gives_calcutta_which_zoneinfo_loads() -> None:
    assert time_zones_for_number("+919876543210") == ("Asia/Calcutta",)
    assert ZoneInfo("Asia/Calcutta").key == "Asia/Calcutta"


def test_toll_free_numbers_span_many_zones_all_loadable() -> None:
    zones = time_zones_for_number("+18005551234")
    assert len(zones) > 30
    assert "America/New_York" in zones
    assert "Pacific/Honolulu" in zones
    for zone in zones:
        ZoneInfo(zone)


@pytest.mark.parametrize(
    "text",
    ["+80012345678", "+15550100000", "not a number", "", "+999"],
)
def test_unknown_numbers_have_no_time_zone(text: str) -> None:
    assert time_zones_for_number(text) == ()


def test_etc_unknown_is_dropped() -> None:
    number = phonenumbers.parse("+80012345678", None)
    assert pn_timezone.time_zones_for_number(number) == ("Etc/Unknown",)
    assert time_zones_for_number("+80012345678") == ()


@settings(max_examples=60, deadline=None)
@given(number=st.sampled_from(_valid_numbers(200, seed=11)))
def test_every_zone_returned_loads_in_zoneinfo(number: phonenumbers.PhoneNumber) -> None:
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    zones = time_zones_for_number(e164)
    raw = set(pn_timezone.time_zones_for_number(number)) - {"Etc/Unknown"}
    assert set(zones) == raw
    assert parse_phone(e164).time_zones == zones
    for zone in zones:
        ZoneInfo(zone)


# -- US states -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("e164", "state"),
    [
        ("+13053725000", "FL"),  # Miami
        ("+18135550100", "FL"),  # Tampa
        ("+14055550100", "OK"),  # Oklahoma City
        ("+19185550100", "OK"),  # Tulsa
        ("+14105550100", "MD"),  # Baltimore
        ("+13015550100", "MD"),
        ("+15045550100", "LA"),  # New Orleans
        ("+12255550100", "LA"),  # Baton Rouge
        ("+12135550100", "CA"),  # Los Angeles
        ("+14155550100", "CA"),  # San Francisco
        ("+12128675309", "NY"),  # Manhattan
        ("+17185550100", "NY"),  # Brooklyn
        ("+12025550100", "DC"),
        ("+12085550100", "ID"),
    ],
)
def test_us_state_comes_from_the_area_code(e164: str, state: str) -> None:
    assert us_state_for_number(e164) == state


@pytest.mark.parametrize(
    "e164",
    [
        "+14165550100",  # Toronto: Canada is not a US state
        "+18005551234",  # toll-free
        "+919876543210",
        "+442079460958",
        "2128675309",  # not E.164
        "+1212867530",  # too short
        "+1 212 867 5309",  # not normalized
    ],
)
def test_non_us_or_non_geographic_numbers_have_no_state(e164: str) -> None:
    assert us_state_for_number(e164) is None


def test_area_code_table_covers_every_state_and_dc() -> None:
    raw = resources.files("outdial").joinpath("data/us_area_codes.json").read_text("utf-8")
    table: dict[str, str] = json.loads(raw)["area_codes"]
    assert len(set(table.values())) == 51
    for area_code, state in table.items():
        number = phonenumbers.parse(f"+1{area_code}2345678", None)
        assert phonenumbers.region_code_for_number(number) == "US", area_code
        assert us_state_for_number(f"+1{area_code}2345678") == state


def test_every_geographic_us_area_code_has_a_state() -> None:
    for area_code in range(200, 1000):
        e164 = f"+1{area_code}2345678"
        number = phonenumbers.parse(e164, None)
        if not phonenumbers.is_valid_number(number):
            continue
        if phonenumbers.region_code_for_number(number) != "US":
            continue
        kind = phonenumbers.number_type(number)
        if kind == phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE:
            assert us_state_for_number(e164) is not None, area_code


# -- masking ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("e164", "masked"),
    [
        ("+12125554567", "+1******4567"),
        ("+919876543210", "+91******3210"),
        ("+442079460958", "+44******0958"),
        ("+33142685300", "+33*****5300"),
        ("+3541234567", "+354***4567"),
        ("555-1234", "***1234"),
        ("1234", "****"),
        ("", ""),
    ],
)
def test_mask_phone_keeps_only_country_code_and_last_four(e164: str, masked: str) -> None:
    assert mask_phone(e164) == masked


@settings(max_examples=100, deadline=None)
@given(number=st.sampled_from(_valid_numbers(200, seed=3)))
def test_masked_number_never_shows_the_middle_digits(number: phonenumbers.PhoneNumber) -> None:
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    masked = mask_phone(e164)
    assert len(masked) == len(e164)
    assert masked.startswith(f"+{number.country_code}*")
    assert masked.endswith(e164[-4:])
    middle = masked[len(str(number.country_code)) + 1 : -4]
    assert set(middle) == {"*"}

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


# -- outdial's one type check agrees with phonenumbers ---------------------------------------
#
# outdial.phone works out a number's type once, from phonenumbers' metadata, where
# is_valid_number, region_code_for_number and time_zones_for_number each work it out
# again, and finds time zones by walking up the prefix table. These tests compare it
# with those public functions over every region's example numbers and variations of
# them, valid and not, so a phonenumbers upgrade that changes the rules fails here.


def _sweep_numbers() -> list[phonenumbers.PhoneNumber]:
    """Every region's example number of every type, non-geographic examples, a sweep
    of NANP area codes, and for each example: one digit less, one more, and three
    with random digits behind a kept prefix (many of them invalid)."""
    kinds = [k for k in range(PhoneNumberType.VOICEMAIL + 1) if k != PhoneNumberType.UNKNOWN]
    examples = [
        example
        for region in sorted(phonenumbers.SUPPORTED_REGIONS)
        for kind in kinds
        if (example := phonenumbers.example_number_for_type(region, kind)) is not None
    ]
    examples += [
        example
        for code in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS)
        if (example := phonenumbers.example_number_for_non_geo_entity(code)) is not None
    ]
    rng = random.Random(5)
    texts = [f"+1{area}2345678" for area in range(200, 1000)]
    for example in examples:
        nsn = phonenumbers.national_significant_number(example)
        variants = [nsn, nsn[:-1], nsn + "1"]
        for _ in range(3):
            keep = rng.randint(1, max(1, len(nsn) - 1))
            variants.append(nsn[:keep] + "".join(rng.choice("0123456789") for _ in nsn[keep:]))
        texts += [f"+{example.country_code}{v}" for v in variants if v]
    numbers = []
    for text in dict.fromkeys(texts):
        try:
            numbers.append(phonenumbers.parse(text, None))
        except phonenumbers.NumberParseException:
            continue
    return numbers


SWEEP = _sweep_numbers()
VALID_SWEEP = [n for n in SWEEP if phonenumbers.is_valid_number(n)]


def test_the_sweep_covers_every_number_type_valid_and_invalid() -> None:
    kinds = {phonenumbers.number_type(n) for n in SWEEP}
    assert kinds >= {
        PhoneNumberType.FIXED_LINE,
        PhoneNumberType.MOBILE,
        PhoneNumberType.FIXED_LINE_OR_MOBILE,
        PhoneNumberType.TOLL_FREE,
        PhoneNumberType.PREMIUM_RATE,
        PhoneNumberType.SHARED_COST,
        PhoneNumberType.VOIP,
        PhoneNumberType.PERSONAL_NUMBER,
        PhoneNumberType.PAGER,
        PhoneNumberType.UAN,
        PhoneNumberType.VOICEMAIL,
        PhoneNumberType.UNKNOWN,
    }
    assert len(VALID_SWEEP) > 3000
    assert len(SWEEP) - len(VALID_SWEEP) > 2000
    # every country code, and every region but the few whose examples another
    # region of the same code claims first (EH's go to MA, MF's to GP)
    assert {n.country_code for n in VALID_SWEEP} == set(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
    regions = {phonenumbers.region_code_for_number(n) for n in VALID_SWEEP}
    assert len(set(phonenumbers.SUPPORTED_REGIONS) - regions) <= 5


def test_one_type_check_gives_phonenumbers_region_type_and_validity() -> None:
    wrong = []
    for number in SWEEP:
        region, kind, nsn = _classify(number)
        expected = (
            phonenumbers.region_code_for_number(number),
            phonenumbers.number_type(number),
            phonenumbers.national_significant_number(number),
        )
        valid = phonenumbers.is_valid_number(number)
        if (region, kind, nsn) != expected or (kind != PhoneNumberType.UNKNOWN) != valid:
            wrong.append((number, (region, kind, nsn), expected, valid))
    assert wrong == []


def _loadable_zones(zones: tuple[str, ...]) -> tuple[str, ...]:
    kept = []
    for zone in zones:
        try:
            ZoneInfo(zone)
        except (KeyError, ValueError, OSError):
            continue
        kept.append(zone)
    return tuple(kept)


def test_parse_phone_agrees_with_phonenumbers_on_every_valid_number() -> None:
    wrong = []
    for number in VALID_SWEEP:
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        region = phonenumbers.region_code_for_number(number)
        expected = PhoneNumberInfo(
            e164=e164,
            region=region if region in phonenumbers.SUPPORTED_REGIONS else None,
            time_zones=_loadable_zones(pn_timezone.time_zones_for_number(number)),
            us_state=us_state_for_number(e164) if region == "US" else None,
        )
        info = parse_phone(e164)
        short = _e164_and_zones(e164, None)
        if info != expected or short != (e164, expected.time_zones):
            wrong.append((e164, info, short, expected))
    assert wrong == []


def test_prefix_walk_finds_phonenumbers_zones_for_every_table_key() -> None:
    wrong = []
    for key in TIMEZONE_DATA:
        # one more digit of each kind, then a few: the walk must stop at the right key
        for digits in [key + "5", key + "55555555", *(key + tail + "5" for tail in "0123456789")]:
            rest = digits[1:]  # never all zeros: it ends in 5
            zeros = len(rest) - len(rest.lstrip("0"))
            number = phonenumbers.PhoneNumber(
                country_code=int(digits[0]),
                national_number=int(rest),
                italian_leading_zero=zeros > 0 or None,
                number_of_leading_zeros=zeros if zeros > 1 else None,
            )
            e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
            assert e164 == "+" + digits
            expected = _loadable_zones(pn_timezone.time_zones_for_geographical_number(number))
            if _zones_by_prefix(e164) != expected:
                wrong.append((digits, _zones_by_prefix(e164), expected))
    assert wrong == []


@pytest.mark.parametrize(
    ("text", "region"),
    [
        ("(305) 372-5000", "US"),
        ("09876543210", "IN"),
        ("+44 7911 123456", None),
        ("+800 1234 5678", None),
    ],
)
def test_e164_and_zones_is_parse_phone_in_short(text: str, region: str | None) -> None:
    info = parse_phone(text, region)
    assert _e164_and_zones(text, region) == (info.e164, info.time_zones)


@pytest.mark.parametrize(
    ("text", "reason"), [("123", "too short"), ("n/a", "contains letters"), ("", "empty")]
)
def test_e164_and_zones_refuses_what_normalize_phone_refuses(text: str, reason: str) -> None:
    with pytest.raises(InvalidPhoneNumber) as info:
        _e164_and_zones(text, "US")
    assert info.value.reason == reason


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

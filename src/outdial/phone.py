"""Phone numbers: normalization to E.164, time zones, US states and masking.

Every number the library stores or dials is in E.164 (``+919876543210``).
:func:`normalize_phone` turns what people type into that form and refuses the
rest with :class:`~outdial.errors.InvalidPhoneNumber`, whose ``reason`` says why:

- ``"empty"``: nothing but blanks;
- ``"contains letters"``: vanity numbers (``1-800-FLOWERS``), extensions
  (``x12``, ``ext. 12``) and stray words are refused rather than guessed at,
  although phonenumbers would turn letters into digits;
- ``"no country code and no default region"``: national format without
  ``default_region``;
- ``"invalid country code"``, ``"not a phone number"``, ``"too short"``,
  ``"too long"``, ``"wrong length for region XX"``;
- ``"not a valid number for region XX"``: the right length but no number plan
  allows it (reserved ``555-01xx`` numbers, unassigned area codes...);
- ``"extensions are not supported"``.

Spaces, dashes, dots, brackets, a leading ``+`` and a leading ``00``
(international prefix) are accepted. With a default region, national forms work
(``09876543210`` for ``IN``), and so do numbers written with the region's
country code but no ``+`` (``919876543210``).

The functions are pure: they read phonenumbers' metadata and the shipped
area-code table, never a clock, a network or a random source.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from importlib import resources
from zoneinfo import ZoneInfo

import attrs
import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumberDesc, PhoneNumberType
from phonenumbers.tzdata import TIMEZONE_DATA, TIMEZONE_LONGEST_PREFIX

from outdial.errors import ConfigurationError, InvalidPhoneNumber

__all__ = [
    "PhoneNumberInfo",
    "mask_phone",
    "normalize_phone",
    "parse_phone",
    "time_zones_for_number",
    "us_state_for_number",
]

_REGIONS = frozenset(phonenumbers.SUPPORTED_REGIONS)
_COUNTRY_CODES = frozenset(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
_REGIONS_OF_CODE = phonenumbers.COUNTRY_CODE_TO_REGION_CODE
_parse = phonenumbers.parse
_nsn = phonenumbers.national_significant_number
_geographical = phonenumbers.is_number_type_geographical
_UNKNOWN = PhoneNumberType.UNKNOWN
_FIXED_LINE = PhoneNumberType.FIXED_LINE
_FIXED_LINE_OR_MOBILE = PhoneNumberType.FIXED_LINE_OR_MOBILE
_MOBILE = PhoneNumberType.MOBILE
_MAX_NSN_LENGTH = 17  # phonenumbers' MAX_LENGTH_FOR_NSN

# Any letter of any script (``\w`` without digits and underscore): one C-level scan.
_LETTER = re.compile(r"[^\W\d_]")
_PARSE_ERRORS = {
    phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: "invalid country code",
    phonenumbers.NumberParseException.NOT_A_NUMBER: "not a phone number",
    phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
    phonenumbers.NumberParseException.TOO_SHORT_NSN: "too short",
    phonenumbers.NumberParseException.TOO_LONG: "too long",
}


@attrs.frozen
class PhoneNumberInfo:
    """What one parse tells about a number.

    ``region`` is the ISO 3166 region of the number plan it belongs to (``"US"``,
    ``"CA"``, ``"IN"``), ``None`` for non-geographic numbers (``+800``...).
    ``time_zones`` are IANA names zoneinfo can load (empty when unknown), and
    ``us_state`` the two-letter state presumed from a US area code.
    """

    e164: str
    region: str | None
    time_zones: tuple[str, ...]
    us_state: str | None


def normalize_phone(text: str, default_region: str | None = None) -> str:
    """``text`` as an E.164 string, or :class:`InvalidPhoneNumber` saying why not.

    ``default_region`` (ISO 3166 alpha-2, e.g. ``"IN"``) is used for numbers
    written without a country code; an unknown region is a
    :class:`~outdial.errors.ConfigurationError`.
    """
    return _valid_number(text, default_region)[0]


def parse_phone(text: str, default_region: str | None = None) -> PhoneNumberInfo:
    """Normalize ``text`` and look up its region, time zones and US state in one parse.

    The number's type (fixed line, mobile, toll-free...) is worked out once and
    serves validity, the region and the time zones alike.
    """
    e164, country_code, region, kind = _valid_number(text, default_region)
    return PhoneNumberInfo(
        e164=e164,
        region=region if region in _REGIONS else None,
        time_zones=_zones_of(e164, country_code, kind),
        us_state=us_state_for_number(e164) if region == "US" else None,
    )


def _e164_and_zones(text: str, default_region: str | None) -> tuple[str, tuple[str, ...]]:
    """``parse_phone(text, default_region)``'s ``e164`` and ``time_zones``, and nothing else.

    For the CSV import, which needs only these two, at the least cost; raises
    what :func:`normalize_phone` raises.
    """
    e164, country_code, _region, kind = _valid_number(text, default_region)
    return e164, _zones_of(e164, country_code, kind)


@functools.lru_cache(maxsize=16384)
def time_zones_for_number(e164: str) -> tuple[str, ...]:
    """IANA time zones of the area a number belongs to, as phonenumbers knows it.

    Several zones come back when the number's area spans them (``+1 208`` gives
    ``America/Boise`` and ``America/Los_Angeles``; ``+1 800`` gives 42).  Zones
    zoneinfo cannot load (``Etc/Unknown``) are dropped, so the result is ``()``
    for numbers with no known zone, including text that is not a valid number.
    Mobiles get the zone of their number plan area, not where the phone is.
    """
    try:
        number = _parse(e164, None)
    except phonenumbers.NumberParseException:
        return ()
    _region, kind, nsn = _classify(number)
    if kind == _UNKNOWN:
        return ()
    country_code = number.country_code or 0
    return _zones_of(f"+{country_code}{nsn}", country_code, kind)


def us_state_for_number(e164: str) -> str | None:
    """Two-letter US state (or ``"DC"``) presumed from a NANP number's area code.

    ``None`` for non-US numbers, Canadian and Caribbean area codes, toll-free
    and other non-geographic codes, and text that is not E.164 ``+1`` plus ten
    digits.  The table is data (``outdial/data/us_area_codes.json``).
    """
    if len(e164) != 12 or not e164.startswith("+1") or not e164[1:].isdigit():
        return None
    return _area_codes().get(e164[2:5])


def mask_phone(e164: str) -> str:
    """A number fit for logs: country code and last four digits, the rest ``*``.

    ``mask_phone("+12125554567") == "+1******4567"``.  Text that is not
    ``+`` and digits keeps only its last four digits; four digits or fewer are
    masked whole.
    """
    digits = "".join(ch for ch in e164 if ch.isdigit())
    if len(digits) <= 4:
        return "*" * len(digits)
    prefix = ""
    if e164.startswith("+") and e164[1:].isdigit():
        for size in (1, 2, 3):
            if int(digits[:size]) in _COUNTRY_CODES:
                prefix = "+" + digits[:size]
                break
        if len(digits) - len(prefix) + 1 <= 4:
            prefix = ""
    hidden = len(digits) - (len(prefix) - 1 if prefix else 0) - 4
    return prefix + "*" * hidden + digits[-4:]


# -- internals -------------------------------------------------------------------------


# (E.164, country code, region as phonenumbers names it, PhoneNumberType)
_Valid = tuple[str, int, "str | None", int]


def _valid_number(text: str, default_region: str | None) -> _Valid:
    """Parse and validate: phonenumbers' parse, then the number's type, found once."""
    if default_region is not None and default_region not in _REGIONS:
        default_region = _checked_region(default_region)
    if _LETTER.search(text) is not None:
        raise InvalidPhoneNumber(text, "contains letters")
    candidate = text.strip()
    if candidate.startswith("00"):
        candidate = "+" + candidate[2:]
    try:
        number = _parse(candidate, default_region)
    except phonenumbers.NumberParseException as exc:
        raise _parse_failure(text, candidate, default_region, exc) from None
    if number.extension:
        raise InvalidPhoneNumber(text, "extensions are not supported")
    region, kind, nsn = _classify(number)
    if kind == _UNKNOWN:
        number = _retry_or_refuse(text, candidate, default_region, number)
        region, kind, nsn = _classify(number)
    country_code = number.country_code or 0
    return f"+{country_code}{nsn}", country_code, region, kind


def _checked_region(region: str) -> str:
    upper = region.upper()
    if upper in _REGIONS:
        return upper
    raise ConfigurationError(
        "default_region", region, "is not a region phonenumbers knows (e.g. 'US', 'IN')"
    )


def _parse_failure(
    text: str,
    candidate: str,
    region: str | None,
    exc: phonenumbers.NumberParseException,
) -> InvalidPhoneNumber:
    if not candidate:
        return InvalidPhoneNumber(text, "empty")
    kind = exc.error_type
    if (
        kind == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE
        and region is None
        and "+" not in candidate
    ):
        return InvalidPhoneNumber(text, "no country code and no default region")
    return InvalidPhoneNumber(text, _PARSE_ERRORS.get(kind, "not a phone number"))


def _retry_or_refuse(
    text: str,
    candidate: str,
    region: str | None,
    number: phonenumbers.PhoneNumber,
) -> phonenumbers.PhoneNumber:
    """Slow path for a parsed but invalid number.

    A national parse that fails while the digits start with the region's
    country code is retried as international (``919876543210`` for ``IN``).
    Otherwise the reason is found from the length check. Returns a valid number
    or raises.
    """
    if region is not None and not candidate.startswith("+"):
        digits = "".join(ch for ch in candidate if ch.isdigit())
        if digits.startswith(str(phonenumbers.country_code_for_region(region))):
            try:
                retried = _parse("+" + digits, None)
            except phonenumbers.NumberParseException:
                pass
            else:
                if _classify(retried)[1] != _UNKNOWN and not retried.extension:
                    return retried
    country_code = number.country_code or 0
    number_region = phonenumbers.region_code_for_country_code(country_code)
    if region is not None and phonenumbers.country_code_for_region(region) == country_code:
        number_region = region
    possible = phonenumbers.is_possible_number_with_reason(number)
    result = phonenumbers.ValidationResult
    reason = {
        result.TOO_SHORT: "too short",
        result.IS_POSSIBLE_LOCAL_ONLY: "too short",
        result.TOO_LONG: "too long",
        result.INVALID_LENGTH: f"wrong length for region {number_region}",
        result.INVALID_COUNTRY_CODE: "invalid country code",
    }.get(possible, f"not a valid number for region {number_region}")
    raise InvalidPhoneNumber(text, reason)


# -- the number's type, region and time zones ------------------------------------------
#
# phonenumbers works out a number's type (``_number_type_helper``: up to a dozen
# pattern matches) once in ``region_code_for_number`` (for country codes shared
# by several regions), again in ``is_valid_number``, again in ``number_type``
# and ``time_zones_for_number``, and compiles each pattern through ``re.compile``
# on every call.  :func:`_classify` gives the same answer as
# ``(region_code_for_number(n), number_type(n))`` with one pass over the same
# metadata and patterns compiled once; a number is valid exactly when its type
# is not ``UNKNOWN``.  tests/test_phone.py pins the equivalence on every region.

_Match = Callable[[str], "re.Match[str] | None"]
# Per national number length: the general pattern, the special types in the
# order phonenumbers tries them, fixed line, mobile, and whether fixed line and
# mobile share one pattern.  Lengths no general pattern allows are absent.
_TypeTable = dict[
    int, tuple[_Match, tuple[tuple[int, _Match], ...], "_Match | None", "_Match | None", bool]
]


def _classify(number: phonenumbers.PhoneNumber) -> tuple[str | None, int, str]:
    """``(region_code_for_number(n), number_type(n), national_significant_number(n))``."""
    nsn = _nsn(number)
    country_code = number.country_code or 0
    regions = _REGIONS_OF_CODE.get(country_code, ())
    if len(regions) == 1:
        return regions[0], _kind(nsn, _table(country_code, regions[0])), nsn
    for region in regions:  # as region_code_for_number, for a code several regions share
        known, leading = _leading_digits(region)
        if not known:
            continue
        if leading is not None:
            if leading(nsn) is not None:
                return region, _kind(nsn, _table(country_code, region)), nsn
        else:
            kind = _kind(nsn, _table(country_code, region))
            if kind != _UNKNOWN:
                return region, kind, nsn
    return None, _UNKNOWN, nsn


def _kind(nsn: str, table: _TypeTable) -> int:
    """phonenumbers' ``_number_type_helper(nsn, metadata)`` over a precompiled table."""
    entry = table.get(len(nsn))
    if entry is None:
        return _UNKNOWN
    general, special, fixed, mobile, same = entry
    if general(nsn) is None:
        return _UNKNOWN
    for kind, match in special:
        if match(nsn) is not None:
            return kind
    if fixed is not None and fixed(nsn) is not None:
        if same or (mobile is not None and mobile(nsn) is not None):
            return _FIXED_LINE_OR_MOBILE
        return _FIXED_LINE
    if not same and mobile is not None and mobile(nsn) is not None:
        return _MOBILE
    return _UNKNOWN


@functools.lru_cache(maxsize=1024)
def _leading_digits(region: str) -> tuple[bool, _Match | None]:
    """Whether phonenumbers has metadata for ``region``, and its leading digits test."""
    metadata = PhoneMetadata.metadata_for_region(region.upper(), None)
    if metadata is None:
        return False, None
    leading = metadata.leading_digits
    return True, None if leading is None else re.compile(leading).match


@functools.lru_cache(maxsize=1024)
def _table(country_code: int, region: str) -> _TypeTable:
    """The type table of ``region`` (``"001"``: the non-geographic ``country_code``)."""
    return _type_table(
        PhoneMetadata.metadata_for_region_or_calling_code(country_code, region.upper())
    )


def _type_table(metadata: PhoneMetadata | None) -> _TypeTable:
    if metadata is None or metadata.general_desc is None:
        return {}
    special_descs = (
        (PhoneNumberType.PREMIUM_RATE, metadata.premium_rate),
        (PhoneNumberType.TOLL_FREE, metadata.toll_free),
        (PhoneNumberType.SHARED_COST, metadata.shared_cost),
        (PhoneNumberType.VOIP, metadata.voip),
        (PhoneNumberType.PERSONAL_NUMBER, metadata.personal_number),
        (PhoneNumberType.PAGER, metadata.pager),
        (PhoneNumberType.UAN, metadata.uan),
        (PhoneNumberType.VOICEMAIL, metadata.voicemail),
    )
    general_desc = metadata.general_desc
    lengths = set(general_desc.possible_length)
    if not lengths:  # no lengths listed: every length may match the pattern
        lengths = set(range(1, _MAX_NSN_LENGTH + 1))
    table: _TypeTable = {}
    for length in sorted(lengths):
        general = _matcher(general_desc, length)
        if general is None:
            continue
        special = tuple(
            (kind, match)
            for kind, desc in special_descs
            if (match := _matcher(desc, length)) is not None
        )
        table[length] = (
            general,
            special,
            _matcher(metadata.fixed_line, length),
            _matcher(metadata.mobile, length),
            metadata.same_mobile_and_fixed_line_pattern,
        )
    return table


def _matcher(desc: PhoneNumberDesc | None, length: int) -> _Match | None:
    """``desc``'s full-match test for national numbers of ``length`` digits, as
    phonenumbers' ``_is_number_matching_desc``; ``None`` when it cannot match."""
    if desc is None or not desc.national_number_pattern:
        return None
    if desc.possible_length and length not in desc.possible_length:
        return None
    return _compiled(desc.national_number_pattern)


@functools.cache
def _compiled(pattern: str) -> _Match:
    return re.compile(pattern).fullmatch


def _zones_of(e164: str, country_code: int, kind: int) -> tuple[str, ...]:
    """phonenumbers' ``time_zones_for_number`` for a valid number of type ``kind``,
    without the zones zoneinfo cannot load."""
    if _geographical(kind, country_code):
        return _zones_by_prefix(e164)
    return _country_zones(country_code)


def _zones_by_prefix(e164: str) -> tuple[str, ...]:
    """The zones of the longest prefix of ``e164``'s digits in phonenumbers' table.

    phonenumbers tries every prefix from ``TIMEZONE_LONGEST_PREFIX`` digits down;
    walking up from one digit and stopping as soon as no key of the table begins
    with the prefix gives the same answer in a few look-ups.
    """
    walk = _zone_walk()
    found = None
    for size in range(2, min(TIMEZONE_LONGEST_PREFIX, len(e164) - 1) + 2):
        prefix = e164[1:size]
        is_key = walk.get(prefix)
        if is_key is None:
            break
        if is_key:
            found = prefix
    if found is None:
        return ()
    return _usable_zones(TIMEZONE_DATA[found])


@functools.cache
def _zone_walk() -> dict[str, bool]:
    """Every prefix of a key of phonenumbers' time zone table -> whether it is a key."""
    walk: dict[str, bool] = {}
    for key in TIMEZONE_DATA:
        for size in range(1, len(key)):
            walk.setdefault(key[:size], False)
        walk[key] = True
    return walk


@functools.lru_cache(maxsize=1024)
def _country_zones(country_code: int) -> tuple[str, ...]:
    """phonenumbers' zones for a non-geographic number of ``country_code`` (its
    ``_country_level_time_zones_for_number``, which looks at the code's digits)."""
    code = str(country_code)
    for size in range(TIMEZONE_LONGEST_PREFIX, 0, -1):
        zones = TIMEZONE_DATA.get(code[: 1 + size])
        if zones is not None:
            return _usable_zones(zones)
    return ()


@functools.lru_cache(maxsize=1024)
def _usable_zones(zones: tuple[str, ...]) -> tuple[str, ...]:
    """``zones`` without the ones zoneinfo cannot load (``Etc/Unknown``)."""
    return tuple(zone for zone in zones if _loadable(zone))


@functools.lru_cache(maxsize=1024)
def _loadable(zone: str) -> bool:
    try:
        ZoneInfo(zone)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
        return False
    return True


@functools.cache
def _area_codes() -> dict[str, str]:
    data = resources.files("outdial").joinpath("data/us_area_codes.json").read_text("utf-8")
    table: dict[str, str] = json.loads(data)["area_codes"]
    return table

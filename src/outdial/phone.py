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
from importlib import resources
from zoneinfo import ZoneInfo

import attrs
import phonenumbers
from phonenumbers import timezone as _pn_timezone

from outdial.errors import ConfigurationError, InvalidPhoneNumber

__all__ = [
    "PhoneNumberInfo",
    "mask_phone",
    "normalize_phone",
    "parse_phone",
    "time_zones_for_number",
    "us_state_for_number",
]

_E164 = phonenumbers.PhoneNumberFormat.E164
_REGIONS = frozenset(phonenumbers.SUPPORTED_REGIONS)
_COUNTRY_CODES = frozenset(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
_parse = phonenumbers.parse
_is_valid = phonenumbers.is_valid_number
_format = phonenumbers.format_number

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
    return _format(_valid_number(text, default_region), _E164)


def parse_phone(text: str, default_region: str | None = None) -> PhoneNumberInfo:
    """Normalize ``text`` and look up its region, time zones and US state in one parse."""
    number = _valid_number(text, default_region)
    e164 = _format(number, _E164)
    region = phonenumbers.region_code_for_number(number)
    return PhoneNumberInfo(
        e164=e164,
        region=region if region in _REGIONS else None,
        time_zones=_usable_zones(_pn_timezone.time_zones_for_number(number)),
        us_state=us_state_for_number(e164) if region == "US" else None,
    )


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
    if not _is_valid(number):
        return ()
    return _usable_zones(_pn_timezone.time_zones_for_number(number))


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


def _valid_number(text: str, default_region: str | None) -> phonenumbers.PhoneNumber:
    """Parse and validate; the fast path is phonenumbers' parse + is_valid plus two checks."""
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
    if _is_valid(number):
        return number
    return _retry_or_refuse(text, candidate, default_region, number)


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
    Otherwise the reason is found from the length check.
    """
    if region is not None and not candidate.startswith("+"):
        digits = "".join(ch for ch in candidate if ch.isdigit())
        if digits.startswith(str(phonenumbers.country_code_for_region(region))):
            try:
                retried = _parse("+" + digits, None)
            except phonenumbers.NumberParseException:
                pass
            else:
                if _is_valid(retried) and not retried.extension:
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

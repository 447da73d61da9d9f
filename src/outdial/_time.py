"""Small helpers for instants. Every instant the library handles is aware."""

from __future__ import annotations

from datetime import date, datetime, time, timezone
from zoneinfo import ZoneInfo

from outdial.errors import NaiveDatetimeError

UTC = timezone.utc


def require_aware(value: datetime, where: str = "") -> datetime:
    """Return ``value`` unchanged if it is aware, else raise ``NaiveDatetimeError``."""
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise NaiveDatetimeError(value, where)
    return value


def to_utc(value: datetime, where: str = "") -> datetime:
    """The same instant expressed in UTC (refusing naive datetimes)."""
    return require_aware(value, where).astimezone(UTC)


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """The instant (UTC) local ``day`` starts in ``zone``.

    A midnight that does not exist (America/Santiago 2026-09-06, America/Havana
    2026-03-08: clocks jump 00:00 -> 01:00) resolves with ``fold=0`` to the
    pre-transition offset, which is exactly the instant the day starts.
    """
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)
